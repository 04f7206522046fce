"""Fingerprints (spec/gateway-lite.rst, Fingerprint Management): 32 hex digits identifying a user's
phone to their Gateway Lites. Each belongs to one user; the value is unique across all users. Every
change is pushed to the user's gateways (handlers/gateway_lite.sync_fingerprints)."""

from __future__ import annotations

import re
import uuid

from pydantic import BaseModel, Field, RootModel, field_validator
from tortoise.exceptions import IntegrityError

from handlers.context import Context
from handlers.errors import Conflict, InvalidPayload, NotFound
from handlers.gateway_lite import fingerprint_entry, sync_fingerprints
from handlers.principal import Principal
from handlers.tenancy import as_uuid, bad_reference
from handlers.user_rules import field_error
from handlers.views import View
from models.gateway_lite import Fingerprint

HEX32 = re.compile(r"[0-9a-fA-F]{32}")


class FingerprintBody(BaseModel):
    fingerprint: str = Field(description="32 hexadecimal digits (stored in lower case)", min_length=1, max_length=64)
    description: str = Field("", max_length=200)
    user: uuid.UUID | None = Field(None, description="write-only; defaults to (and may only be) the caller")

    @field_validator("fingerprint")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not HEX32.fullmatch(value):
            raise ValueError("must be 32 hexadecimal digits")
        return value.lower()


class FingerprintView(View):
    id: str
    fingerprint: str
    description: str


class FingerprintList(RootModel[list[FingerprintView]]):
    """The caller's fingerprints, oldest first (a bare array, as the spec shows)."""


class ResyncRequest(BaseModel):
    fingerprints: list[str] | None = Field(
        None, max_length=10000, description="fingerprints, or their ids without hyphens; left out: all of yours"
    )


class ResyncDetail(View):
    detail: str


async def create(ctx: Context, principal: Principal, req: FingerprintBody) -> dict[str, str]:
    if req.user is not None and str(req.user) != principal.user_id:
        raise bad_reference("user", "a fingerprint belongs to the user who creates it")
    try:
        f = await Fingerprint.create(
            fingerprint=req.fingerprint, description=req.description, user_id=principal.user_id
        )
    except IntegrityError:
        raise field_error(
            Conflict, "fingerprint", "this fingerprint is already registered", "duplicate_fingerprint"
        ) from None
    await sync_fingerprints(ctx, principal.user_id)
    return fingerprint_entry(f)


async def list_own(principal: Principal) -> list[dict[str, str]]:
    return [fingerprint_entry(f) for f in await Fingerprint.filter(user_id=principal.user_id).order_by("created", "id")]


async def _own(principal: Principal, raw_id: str) -> Fingerprint:
    f = await Fingerprint.get_or_none(id=as_uuid(raw_id, "fingerprint"), user_id=principal.user_id)
    if f is None:
        raise NotFound(f"fingerprint {raw_id} not found", code="fingerprint_not_found")
    return f


async def get(principal: Principal, raw_id: str) -> dict[str, str]:
    return fingerprint_entry(await _own(principal, raw_id))


async def delete(ctx: Context, principal: Principal, raw_id: str) -> None:
    f = await _own(principal, raw_id)
    await f.delete()
    await sync_fingerprints(ctx, principal.user_id)


async def resync(ctx: Context, principal: Principal, req: ResyncRequest) -> dict[str, str]:
    own = await Fingerprint.filter(user_id=principal.user_id).order_by("created", "id")
    if req.fingerprints is None:
        await sync_fingerprints(ctx, principal.user_id)
        return {"detail": f"Synchronizing {len(own)} fingerprint(s)."}
    by_key = {f.fingerprint: f for f in own} | {f.id.hex: f for f in own}
    unknown = [e for e in req.fingerprints if e.lower() not in by_key]
    if unknown:
        shown = ", ".join(repr(e[:40]) for e in unknown[:20])
        raise InvalidPayload(
            f"fingerprints: not yours or unknown: {shown}",
            code="unknown_fingerprint",
            errors=[{"field": "fingerprints", "message": f"not yours or unknown: {e[:40]!r}"} for e in unknown[:100]],
        )
    chosen = list({id(f): f for f in (by_key[e.lower()] for e in req.fingerprints)}.values())
    await sync_fingerprints(ctx, principal.user_id, chosen)
    return {"detail": f"Synchronizing {len(chosen)} fingerprint(s)."}
