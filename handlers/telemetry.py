"""Telemetry: one ingest for both doors, the latest value, and paginated history."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from handlers.accounts import Principal
from handlers.context import Context
from handlers.devices import owned_device
from handlers.effects import Effect, Publish
from handlers.envelope import Envelope
from handlers.errors import Forbidden, InvalidPayload
from handlers.senml import decode_pack, is_senml
from handlers.views import Timestamp, View
from models.telemetry import Sample, Telemetry

MAX_READINGS = 1000

# What a device sends: an object of readings, or a SenML pack (RFC 8428), for the document.
TelemetryPayload = dict[str, Any] | list[dict[str, Any]]


class IngestAck(View):
    status: Literal["ok"] = Field(description="the sample is committed")


class Latest(View):
    device_id: int
    payload: Any = Field(description="the last sample (null before the first one)")
    received_at: Timestamp | None


class SampleView(View):
    id: int
    received_at: Timestamp
    payload: Any
    source: Literal["http", "mqtt"]


class History(View):
    device_id: int
    results: list[SampleView] = Field(description="newest first")
    next_cursor: int | None = Field(description="pass as cursor for the next page; null on the last page")


def parse_payload(env: Envelope) -> Any:
    """A JSON object of readings, or a SenML pack resolved to absolute records."""
    data = env.json()
    if is_senml(data):
        return decode_pack(data, now=env.received_at.timestamp())
    if not isinstance(data, dict):
        raise InvalidPayload("telemetry must be a JSON object of readings or a SenML array", code="invalid_telemetry")
    if not data:
        raise InvalidPayload("telemetry object has no readings", code="invalid_telemetry")
    if len(data) > MAX_READINGS:
        raise InvalidPayload(f"telemetry object has more than {MAX_READINGS} readings", code="invalid_telemetry")
    return data


def start_telemetry(ctx: Context, env: Envelope) -> tuple[asyncio.Future[None], list[Effect]]:
    """Validate a sample (raising why not) and queue it for the group commit. The effects hold once
    the future is done: subscribers get the sample only after it is committed."""
    if env.identity.kind != "device" or env.identity.device_id is None:
        raise Forbidden("only a device may send telemetry", code="not_a_device")
    topic = telemetry_topic(env.identity.username)
    payload = parse_payload(env)
    # A JSON object is stored as the device sent it (it parsed strictly); SenML is stored resolved.
    text = env.payload.decode() if isinstance(payload, dict) else json.dumps(payload, separators=(",", ":"))
    committed = ctx.writer.submit(Sample(env.identity.device_id, env.received_at, text, env.source))
    return committed, [Publish(topic, env.payload, qos=env.qos)]


async def ingest_telemetry(ctx: Context, env: Envelope) -> list[Effect]:
    """Validate a sample, return once it is committed (group commit); subscribers then get it."""
    committed, effects = start_telemetry(ctx, env)
    await committed
    return effects


def telemetry_topic(username: str) -> str:
    return f"devices/{username}/telemetry"


async def latest(principal: Principal, device_id: int) -> dict[str, object]:
    device = await owned_device(principal, device_id)
    return {
        "device_id": device.id,
        "payload": device.last_payload,
        "received_at": device.last_payload_at.isoformat() if device.last_payload_at else None,
    }


class HistoryQuery(BaseModel):
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(100, ge=1)
    # Bounded: a larger number overflows the 64-bit id column (a 500 instead of a 400).
    cursor: int | None = Field(None, ge=1, le=2**63 - 1, description="next_cursor from the previous page")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        # ISO 8601 only: pydantic alone would read a number ("0.5") as a Unix time.
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # A time without an offset means UTC, as everywhere else in the API.
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


async def history(ctx: Context, principal: Principal, device_id: int, q: HistoryQuery) -> dict[str, object]:
    """Samples newest first; pass `next_cursor` back as `cursor` for the next page."""
    device = await owned_device(principal, device_id)
    limit = min(q.limit, ctx.history_page_max)
    query = Telemetry.filter(device_id=device.id)
    if q.since:
        query = query.filter(received_at__gte=q.since)
    if q.until:
        query = query.filter(received_at__lt=q.until)
    if q.cursor:
        query = query.filter(id__lt=q.cursor)
    rows = await query.order_by("-id").limit(limit + 1)
    page = rows[:limit]
    return {
        "device_id": device.id,
        "results": [
            {"id": r.id, "received_at": r.received_at.isoformat(), "payload": r.payload, "source": r.source}
            for r in page
        ],
        "next_cursor": page[-1].id if len(rows) > limit else None,
    }
