"""Telemetry history, and the batch write used by the group-commit writer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise import connections, fields
from tortoise.models import Model
from tortoise.transactions import in_transaction


class Telemetry(Model):
    id = fields.BigIntField(primary_key=True)
    device = fields.ForeignKeyField("models.Device", related_name="telemetry", on_delete=fields.CASCADE)
    received_at = fields.DatetimeField(index=True)
    payload = fields.JSONField()
    source = fields.CharField(max_length=8)

    class Meta:
        table = "telemetry"
        indexes = (("device_id", "id"),)


@dataclass(frozen=True, slots=True)
class Sample:
    device_id: int
    received_at: datetime
    payload: Any
    source: str


def _placeholders(dialect: str, count: int) -> list[str]:
    if dialect == "postgres":
        return [f"${i}" for i in range(1, count + 1)]
    return ["?"] * count


async def store_batch(samples: Sequence[Sample]) -> None:
    """Write a batch in one transaction: every sample to history, the newest to its device."""
    if not samples:
        return
    dialect = connections.get("default").capabilities.dialect
    p = _placeholders(dialect, 4)
    insert = f"INSERT INTO telemetry (device_id, received_at, payload, source) VALUES ({p[0]}, {p[1]}, {p[2]}, {p[3]})"
    update = f"UPDATE devices SET last_payload = {p[0]}, last_payload_at = {p[1]}, last_seen = {p[2]} WHERE id = {p[3]}"
    newest: dict[int, Sample] = {}
    rows = []
    for s in samples:
        body = json.dumps(s.payload, separators=(",", ":"))
        rows.append([s.device_id, _ts(s.received_at, dialect), body, s.source])
        newest[s.device_id] = s
    latest = [
        [json.dumps(s.payload, separators=(",", ":")), ts, ts, s.device_id]
        for s in newest.values()
        for ts in [_ts(s.received_at, dialect)]
    ]
    async with in_transaction("default") as conn:
        await conn.execute_many(insert, rows)
        await conn.execute_many(update, latest)


def _ts(value: datetime, dialect: str) -> Any:
    # Tortoise stores SQLite datetimes as ISO text; asyncpg wants datetime objects.
    return value if dialect == "postgres" else value.isoformat(sep=" ")
