"""Integration keys of Gateway Lite providers (spec/gateway-lite.rst, Obtaining an Integration Key).

The key is HMAC(server secret, partner id + nonce): it can be shown again without being stored, and
the database holds only its digest (for the lookup at self-registration) and the nonce. Rotating
draws a new nonce: the old key stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pydantic import Field
from tortoise.exceptions import IntegrityError

from handlers.context import Context
from handlers.errors import Forbidden, NotFound
from handlers.partners import seen
from handlers.principal import Principal
from handlers.secrets import digest
from handlers.views import View
from models.gateway_lite import IntegrationKey
from models.tenancy import Partner


class IntegrationKeyView(View):
    integration_key: str = Field(description="give it to the users who register themselves (POST .../users/register/)")


def _key(ctx: Context, partner_id: str, nonce: str) -> str:
    mac = hmac.new(ctx.jwt_secret.encode(), f"integration-key:{partner_id}:{nonce}".encode(), hashlib.sha256)
    return mac.hexdigest()[:40]


async def _provider(principal: Principal, partner_id: str) -> Partner:
    """The partner if the caller sees it and it is a Gateway Lite provider (404 otherwise); only gooee
    and the partner's own users may go on (403)."""
    partner = await seen(principal, partner_id)
    if not partner.is_gateway_lite_provider:
        raise NotFound(f"partner {partner_id} is not a Gateway Lite provider", code="not_a_gateway_lite_provider")
    if not (principal.is_admin or principal.partner_id == str(partner.id)):
        raise Forbidden(
            "only gooee users and the partner's own users see its integration key", code="permission_denied"
        )
    return partner


async def _create(ctx: Context, partner: Partner) -> str:
    """The partner's first key; of concurrent first requests one creates it and all answer it."""
    nonce = secrets.token_hex(16)
    key = _key(ctx, str(partner.id), nonce)
    try:
        await IntegrationKey.create(partner=partner, nonce=nonce, key_hash=digest(key))
        return key
    except IntegrityError:
        row = await IntegrationKey.get(partner_id=partner.id)
        return _key(ctx, str(partner.id), row.nonce)


async def get_key(ctx: Context, principal: Principal, partner_id: str) -> dict[str, str]:
    """The partner's key, made on first request."""
    partner = await _provider(principal, partner_id)
    row = await IntegrationKey.get_or_none(partner_id=partner.id)
    return {"integration_key": _key(ctx, str(partner.id), row.nonce) if row else await _create(ctx, partner)}


async def rotate_key(ctx: Context, principal: Principal, partner_id: str) -> dict[str, str]:
    """A new nonce: the old key stops working at once."""
    partner = await _provider(principal, partner_id)
    if not await IntegrationKey.filter(partner_id=partner.id).exists():
        await _create(ctx, partner)
    nonce = secrets.token_hex(16)
    key = _key(ctx, str(partner.id), nonce)
    await IntegrationKey.filter(partner_id=partner.id).update(nonce=nonce, key_hash=digest(key))
    return {"integration_key": key}


async def partner_of_key(ctx: Context, key: str) -> Partner | None:
    """The Gateway Lite provider this key belongs to (still a provider), or None."""
    row = await IntegrationKey.get_or_none(key_hash=digest(key)).prefetch_related("partner")
    if row is None or not hmac.compare_digest(_key(ctx, str(row.partner.id), row.nonce), key):
        return None
    return row.partner if row.partner.is_gateway_lite_provider else None
