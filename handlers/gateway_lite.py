"""Gateway Lite devices (spec/gateway-lite.rst): acquire and release, the /devices/ view of every
device in scope, the gateways' MQTT login, and the fingerprint list each gateway holds.

A gateway keeps its owner's fingerprints as one retained JSON message on `devices/<euid>/fingerprints`
(`[{"id", "fingerprint", "description"}, ...]`), published again after every change; releasing it
publishes `[]`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, Field
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from handlers.context import Context
from handlers.devices import RESERVED_USERNAMES, USERNAME_RE, check_permission, identity_of
from handlers.effects import Effect, Publish
from handlers.envelope import Identity
from handlers.errors import InvalidPayload, NotFound
from handlers.principal import Principal
from handlers.secrets import digest_matches, keyed_digest_matches
from handlers.tenancy import PageQuery, devices_seen_by
from handlers.user_rules import field_error
from handlers.views import Timestamp, View
from models.devices import Device
from models.gateway_lite import Fingerprint, GatewayLite

RELEASED = "The Gateway was released successfully."


class AcquireRequest(BaseModel):
    euid: str = Field(
        min_length=1,
        max_length=2000,
        description="the euid as printed, or the QR payload: a URI carrying it (`?euid=` or its last path "
        'segment) or JSON such as `{"euid": "..."}`',
    )


class Acquired(View):
    uuid: str
    euid: str
    access_url: str


class ReleaseDetail(View):
    detail: str


class DeviceEntry(View):
    id: int = Field(description="the registry id (GET /gateway/devices/{id})")
    uuid: str | None = Field(description="a Gateway Lite's UUID (null for other kinds)")
    name: str
    kind: str
    username: str = Field(description="the MQTT username: euid, MAC, ESP32 id")
    owner: str
    commission_state: str | None = Field(description="Gateway Lite: inactive or customer_provisioned; others null")
    online: bool
    last_seen: Timestamp | None
    created: Timestamp


class DeviceEntries(View):
    count: int
    results: list[DeviceEntry]


def fingerprints_topic(euid: str) -> str:
    return f"devices/{euid}/fingerprints"


def _entry(device: Device, gw: GatewayLite | None) -> dict[str, object]:
    return {
        "id": device.id,
        "uuid": str(gw.uuid) if gw else None,
        "name": device.name,
        "kind": device.kind,
        "username": device.username,
        "owner": str(device.owner_id),  # type: ignore[attr-defined]
        "commission_state": gw.commission_state if gw else None,
        "online": device.online,
        "last_seen": device.last_seen,
        "created": device.created,
    }


def parse_euid(raw: str) -> str:
    """The euid from what the user typed or scanned: bare, a URI, or JSON (docs/gateway_lite.md)."""
    text = raw.strip()
    found: Any = text
    try:
        if text.startswith("{"):
            found = json.loads(text).get("euid")
        elif text.lower().startswith("urn:"):
            found = text.rsplit(":", 1)[-1]
        elif "://" in text:
            parts = urlsplit(text)
            query = parse_qs(parts.query).get("euid")
            found = query[0] if query else ([s for s in parts.path.split("/") if s] or [parts.netloc])[-1]
    except (ValueError, AttributeError, RecursionError):  # not JSON / not a URI / nested beyond reason
        found = None
    if not isinstance(found, str) or not USERNAME_RE.fullmatch(found) or found.lower() in RESERVED_USERNAMES:
        raise field_error(InvalidPayload, "euid", "not an euid, nor a QR payload carrying one", "invalid_euid")
    return found


async def acquire(ctx: Context, principal: Principal, req: AcquireRequest) -> dict[str, object]:
    """inactive -> customer_provisioned, owned by the caller (and their customer). Of two racing
    callers exactly one wins: the state changes by one conditional update."""
    euid = parse_euid(req.euid)
    gw = await GatewayLite.get_or_none(device__username=euid).prefetch_related("imported")
    # A gateway of an import still running is not there yet: the import may still be undone.
    if gw is None or (gw.imported is not None and gw.imported.status != "completed"):
        raise NotFound(f"gateway {euid} not found", code="gateway_not_found")
    taken = field_error(InvalidPayload, "euid", f"gateway {euid} is already acquired", "already_acquired")
    if gw.commission_state != "inactive":
        raise taken
    access = secrets.token_hex(10)
    async with _gateway_lock(ctx, euid):
        async with in_transaction():
            won = await GatewayLite.filter(id=gw.id, commission_state="inactive").update(
                commission_state="customer_provisioned", access_secret=access, acquired_at=datetime.now(UTC)
            )
            if not won:
                raise taken
            await Device.filter(id=gw.device_id).update(  # type: ignore[attr-defined]
                owner_id=principal.user_id,
                tenant_partner_id=principal.partner_id,
                tenant_customer_id=principal.customer_id,
            )
        await sync_fingerprints(ctx, principal.user_id)  # the new gateway gets its owner's list
    return {"uuid": str(gw.uuid), "euid": euid, "access_url": f"{euid}-{access}.{ctx.gateway_lite.access_domain}"}


async def _in_scope(principal: Principal, raw_id: str, *, gateway: bool) -> tuple[Device, GatewayLite | None]:
    """A device by registry id or Gateway Lite UUID, if the caller sees it (404 otherwise)."""
    query = Device.filter(devices_seen_by(principal))
    if raw_id.isascii() and raw_id.isdigit() and 0 < int(raw_id) < 2**31:
        query = query.filter(id=int(raw_id))
    else:
        try:
            query = query.filter(gateway_lite__uuid=uuid.UUID(raw_id))
        except ValueError:
            query = None  # type: ignore[assignment]
    device = await query.first() if query is not None else None
    gw = await GatewayLite.get_or_none(device_id=device.id) if device is not None else None
    if device is None or (gateway and gw is None):
        what = "gateway" if gateway else "device"
        raise NotFound(f"{what} {raw_id} not found", code=f"{what}_not_found")
    return device, gw


async def list_devices(principal: Principal, q: PageQuery) -> dict[str, object]:
    query = Device.filter(devices_seen_by(principal))
    total = await query.count()
    devices = await query.order_by("id").offset(q.offset).limit(q.limit)
    gws = {g.device_id: g for g in await GatewayLite.filter(device_id__in=[d.id for d in devices])}  # type: ignore[attr-defined]
    return {"count": total, "results": [_entry(d, gws.get(d.id)) for d in devices]}


async def get_device(principal: Principal, raw_id: str) -> dict[str, object]:
    return _entry(*await _in_scope(principal, raw_id, gateway=False))


async def release(ctx: Context, principal: Principal, raw_id: str) -> dict[str, str]:
    """Back to inactive and to whoever imported it; the fingerprint list on the gateway is emptied."""
    device, gw = await _in_scope(principal, raw_id, gateway=True)
    assert gw is not None
    owner = str(device.owner_id)  # type: ignore[attr-defined]
    if owner != principal.user_id:
        check_permission(principal, device, "change_device")
    # The gateway's lock orders this [] against a new owner's list; the owner's orders it against
    # their fingerprint changes. Always in this order (acquire takes the same two), so no deadlock.
    async with _gateway_lock(ctx, device.username), _pushing(ctx, owner):
        async with in_transaction():
            # Only the ownership seen above is undone: a gateway released and acquired by someone
            # else meanwhile stays theirs.
            still = await Device.filter(id=device.id, owner_id=owner).update(
                owner_id=gw.importer_id,  # type: ignore[attr-defined]
                tenant_partner_id=gw.importer_partner_id,  # type: ignore[attr-defined]
                tenant_customer_id=None,
            )
            if still:
                await GatewayLite.filter(id=gw.id).update(
                    commission_state="inactive", access_secret="", acquired_at=None
                )
        if still:
            await ctx.effector.apply([Publish.json(fingerprints_topic(device.username), [], retain=True)])
    return {"detail": RELEASED}


# --- fingerprints on the gateways ------------------------------------------------------------------


def fingerprint_entry(f: Fingerprint) -> dict[str, str]:
    return {"id": str(f.id), "fingerprint": f.fingerprint, "description": f.description}


async def _list_for(euid: str, user_id: str) -> Publish:
    prints = await Fingerprint.filter(user_id=user_id).order_by("created", "id")
    return Publish.json(fingerprints_topic(euid), [fingerprint_entry(f) for f in prints], retain=True)


async def owned_gateways(user_id: str) -> list[str]:
    """The euids of the gateways this user acquired."""
    return await Device.filter(
        Q(owner_id=user_id), kind="gateway_lite", gateway_lite__commission_state="customer_provisioned"
    ).values_list("username", flat=True)


def _pushing(ctx: Context, user_id: str) -> asyncio.Lock:
    """One push at a time per user: a list read before a change must not be published after the list
    read after it (the retained message is the gateway's state)."""
    return ctx.lock(f"fingerprints:{user_id}")


def _gateway_lock(ctx: Context, euid: str) -> asyncio.Lock:
    """Acquire and release of one gateway, with what they publish to it, one at a time."""
    return ctx.lock(f"gateway:{euid}")


async def sync_fingerprints(ctx: Context, user_id: str, only: list[Fingerprint] | None = None) -> None:
    """Publish the user's full list, retained, on each of their gateways; with `only`, those entries
    also go (not retained) to `devices/<euid>/fingerprints/resync`."""
    async with _pushing(ctx, user_id):
        effects: list[Effect] = []
        for euid in await owned_gateways(user_id):
            effects.append(await _list_for(euid, user_id))
            if only is not None:
                entries = [fingerprint_entry(f) for f in only]
                effects.append(Publish.json(f"{fingerprints_topic(euid)}/resync", entries))
        await ctx.effector.apply(effects)


# --- MQTT ------------------------------------------------------------------------------------------


async def authenticate_mqtt(ctx: Context, device: Device, password: str) -> Identity | None:
    """A Gateway Lite's CONNECT: euid as username, its installation code as password. (One made with
    POST /gateway/devices rather than imported has no installation code: its API key, as before.)"""
    gw = await GatewayLite.get_or_none(device_id=device.id)
    if gw is None:
        return identity_of(device) if digest_matches(password, device.api_key_hash) else None
    matches = keyed_digest_matches(ctx.jwt_secret, "install-code", password, gw.install_code_hash)
    return identity_of(device) if matches else None
