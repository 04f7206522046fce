"""Telemetry history, and the batch write used by the group-commit writer."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
    payload_json: str  # already validated JSON text
    source: str


_CHUNK = 500  # rows per statement: 4 parameters each, well under SQLite's 32,766


class _SqliteBatchWriter:
    """A plain sqlite3 connection on its own thread for telemetry batches.

    Through aiosqlite every statement of a batch (BEGIN, inserts, updates, COMMIT) is a round trip
    to its thread and back through the event loop, and under load each hand-back waits behind
    thousands of ready callbacks: a 10 ms batch took ~100 ms. Here a batch is one call. Rows go
    in as few multi-row statements because the thread gives up the GIL at each statement step
    and must wait for the busy event loop to hand it back.
    """

    def __init__(self, path: str, pragmas: dict[str, Any]) -> None:
        self._path = path
        self._pragmas = pragmas
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gatehouse-telemetry-db")
        self._db: sqlite3.Connection | None = None

    async def write(self, samples: Sequence[Sample]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._write, samples)

    def _write(self, samples: Sequence[Sample]) -> None:
        if self._db is None:
            self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            for name, value in self._pragmas.items():
                self._db.execute(f"PRAGMA {name}={value}")
        db = self._db
        latest = list({s.device_id: s for s in samples}.values())
        # IMMEDIATE: take the write lock up front, so busy_timeout applies (a deferred
        # transaction that upgrades from read to write can fail at once with "locked").
        db.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(samples), _CHUNK):
                chunk = samples[start : start + _CHUNK]
                db.execute(
                    "INSERT INTO telemetry (device_id, received_at, payload, source) VALUES "
                    + ",".join(["(?,?,?,?)"] * len(chunk)),
                    [v for s in chunk for v in (s.device_id, _ts(s.received_at), s.payload_json, s.source)],
                )
            for start in range(0, len(latest), _CHUNK):
                chunk = latest[start : start + _CHUNK]
                db.execute(
                    "WITH v(id, p, t) AS (VALUES " + ",".join(["(?,?,?)"] * len(chunk)) + ") "
                    "UPDATE devices SET last_payload = v.p, last_payload_at = v.t, last_seen = v.t "
                    "FROM v WHERE devices.id = v.id",
                    [v for s in chunk for v in (s.device_id, s.payload_json, _ts(s.received_at))],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()

        self._pool.submit(shut).result()
        self._pool.shutdown()


_sqlite_writer: _SqliteBatchWriter | None = None


async def store_batch(samples: Sequence[Sample]) -> None:
    """Write a batch in one transaction: every sample to history, the newest to its device."""
    global _sqlite_writer
    if not samples:
        return
    conn = connections.get("default")
    dialect = conn.capabilities.dialect
    if dialect == "sqlite" and conn.filename != ":memory:":  # type: ignore[attr-defined]
        if _sqlite_writer is None:
            pragmas = {"busy_timeout": 5000, **conn.pragmas}  # type: ignore[attr-defined]
            _sqlite_writer = _SqliteBatchWriter(conn.filename, pragmas)  # type: ignore[attr-defined]
        await _sqlite_writer.write(samples)
        return
    # PostgreSQL (and in-memory SQLite, which a second connection would not see).
    p = ["$1", "$2", "$3", "$4"] if dialect == "postgres" else ["?"] * 4
    ts = (lambda v: v) if dialect == "postgres" else _ts
    newest = {s.device_id: s for s in samples}
    async with in_transaction("default") as tx:
        await tx.execute_many(
            f"INSERT INTO telemetry (device_id, received_at, payload, source) VALUES ({', '.join(p)})",
            [[s.device_id, ts(s.received_at), s.payload_json, s.source] for s in samples],
        )
        await tx.execute_many(
            f"UPDATE devices SET last_payload = {p[0]}, last_payload_at = {p[1]}, last_seen = {p[2]} WHERE id = {p[3]}",
            [[s.payload_json, ts(s.received_at), ts(s.received_at), s.device_id] for s in newest.values()],
        )


def close_batch_writer() -> None:
    global _sqlite_writer
    if _sqlite_writer is not None:
        _sqlite_writer.close()
        _sqlite_writer = None


def _ts(value: datetime) -> str:
    # Tortoise stores SQLite datetimes as ISO text with a space separator.
    return value.isoformat(sep=" ")
