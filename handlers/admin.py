"""Read-only admin lists for gooee users (spec/device-gateway.md "Admin screens"): issued
provisioning tokens (never the tokens), device credentials (when issued, last used) and telemetry
samples, across tenants, newest first, with a search on the device's name or username."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from handlers.errors import Forbidden
from handlers.principal import Principal
from handlers.views import Timestamp, View
from models.devices import Device, ProvisioningToken
from models.telemetry import Telemetry


class AdminQuery(BaseModel):
    search: str = Field("", max_length=200, description="part of the device's name or username (any case)")
    limit: int = Field(50, ge=1, le=500)
    cursor: int | None = Field(None, ge=1, le=2**63 - 1, description="next_cursor from the previous page")


class TokenRecord(View):
    id: int
    device_id: int
    device: str = Field(description="the device's username")
    device_name: str
    notes: str
    created: Timestamp
    expires_at: Timestamp | None
    used_at: Timestamp | None
    state: Literal["unused", "used", "expired"]


class CredentialRecord(View):
    device_id: int
    device: str = Field(description="the device's username")
    device_name: str
    kind: str
    owner: str = Field(description="the owning user's username")
    issued_at: Timestamp | None = Field(description="when the current API key was claimed")
    last_used: Timestamp | None = Field(description="when the device last connected or sent (its last_seen)")
    online: bool


class SampleRecord(View):
    id: int
    device_id: int
    device: str = Field(description="the device's username")
    device_name: str
    received_at: Timestamp
    source: Literal["http", "mqtt"]
    payload: Any


class TokenPage(View):
    results: list[TokenRecord]
    next_cursor: int | None


class CredentialPage(View):
    results: list[CredentialRecord]
    next_cursor: int | None


class SamplePage(View):
    results: list[SampleRecord]
    next_cursor: int | None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("the admin lists are for gooee users", code="permission_denied")


def _matching(prefix: str, search: str) -> Q:
    if not search:
        return Q()
    return Q(**{f"{prefix}name__icontains": search}) | Q(**{f"{prefix}username__icontains": search})


async def _page(query: QuerySet[Any], q: AdminQuery, view: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    if q.cursor:
        query = query.filter(id__lt=q.cursor)
    rows = await query.order_by("-id").limit(q.limit + 1)
    page = rows[: q.limit]
    return {"results": [view(r) for r in page], "next_cursor": page[-1].id if len(rows) > q.limit else None}


async def tokens(principal: Principal, q: AdminQuery) -> dict[str, Any]:
    _admin(principal)

    def view(t: ProvisioningToken) -> dict[str, Any]:
        expired = t.used_at is None and t.expires_at is not None and t.expires_at <= now
        return {
            "id": t.id,
            "device_id": t.device.id,
            "device": t.device.username,
            "device_name": t.device.name,
            "notes": t.notes,
            "created": _iso(t.created),
            "expires_at": _iso(t.expires_at),
            "used_at": _iso(t.used_at),
            "state": "used" if t.used_at else "expired" if expired else "unused",
        }

    now = datetime.now(UTC)
    query = ProvisioningToken.filter(_matching("device__", q.search)).select_related("device")
    return await _page(query, q, view)


async def credentials(principal: Principal, q: AdminQuery) -> dict[str, Any]:
    _admin(principal)

    def view(d: Device) -> dict[str, Any]:
        return {
            "device_id": d.id,
            "device": d.username,
            "device_name": d.name,
            "kind": d.kind,
            "owner": d.owner.username,
            "issued_at": _iso(d.api_key_created_at),
            "last_used": _iso(d.last_seen),
            "online": d.online,
        }

    query = Device.filter(_matching("", q.search), api_key_hash__isnull=False).select_related("owner")
    return await _page(query, q, view)


async def samples(principal: Principal, q: AdminQuery) -> dict[str, Any]:
    _admin(principal)

    def view(s: Telemetry) -> dict[str, Any]:
        return {
            "id": s.id,
            "device_id": s.device.id,
            "device": s.device.username,
            "device_name": s.device.name,
            "received_at": _iso(s.received_at),
            "source": s.source,
            "payload": s.payload,
        }

    query = Telemetry.filter(_matching("device__", q.search)).select_related("device")
    return await _page(query, q, view)
