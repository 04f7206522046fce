"""Telemetry history, and the batch write used by the group-commit writer."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from tortoise import connections, fields
from tortoise.exceptions import IntegrityError
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


class SampleRefused(IntegrityError):
    """The database refused a row of this batch (its device was deleted, or PostgreSQL cannot store
    its payload); the other samples may be fine, so the writer retries the batch one by one."""


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


class _PostgresBatchWriter:
    """A dedicated asyncpg connection for telemetry batches: a batch is one statement.

    Tortoise's execute_many sends a batch as a transaction of one INSERT per sample, through its
    pool. Here the history rows and the devices' newest values go as arrays in ONE statement (a
    single statement is its own transaction), so a batch costs one round trip however large it
    is: under load each round trip waits behind every ready callback on the event loop.
    """

    SQL = (
        "WITH history AS ("
        " INSERT INTO telemetry (device_id, received_at, payload, source)"
        " SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::jsonb[], $4::text[]))"
        " UPDATE devices SET last_payload = v.p, last_payload_at = v.t, last_seen = v.t"
        " FROM unnest($5::bigint[], $6::jsonb[], $7::timestamptz[]) AS v(id, p, t) WHERE devices.id = v.id"
    )

    def __init__(self, connect_kwargs: dict[str, Any]) -> None:
        self._connect_kwargs = connect_kwargs
        self._conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def write(self, samples: Sequence[Sample]) -> None:
        conn = await self._connection()
        latest = list({s.device_id: s for s in samples}.values())
        try:
            await conn.execute(
                self.SQL,
                [s.device_id for s in samples],
                [s.received_at for s in samples],
                [s.payload_json for s in samples],
                [s.source for s in samples],
                [s.device_id for s in latest],
                [s.payload_json for s in latest],
                [s.received_at for s in latest],
            )
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
            # A foreign key to a device deleted meanwhile, or a payload jsonb refuses ("\u0000").
            raise SampleRefused(str(exc)) from exc
        except BaseException:
            # Connection lost, server restarted, cancelled mid-statement: start afresh next batch.
            self.close()
            raise

    async def _connection(self) -> asyncpg.Connection:
        loop = asyncio.get_running_loop()
        if self._conn is not None and (self._conn.is_closed() or self._loop is not loop):
            self.close()
        if self._conn is None:
            self._conn = await asyncpg.connect(**self._connect_kwargs)
            self._loop = loop
        return self._conn

    def close(self) -> None:
        # terminate(), not close(): this is called from synchronous code; nothing is in flight
        # by then (the writer has flushed), so there is nothing to wait for.
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()
        self._conn = None


_CONNECT_PARAMS = set(inspect.signature(asyncpg.connect).parameters)


def _asyncpg_connect_kwargs(client: Any) -> dict[str, Any]:
    """asyncpg.connect arguments for the same database as Tortoise's PostgreSQL client."""
    settings = dict(client.server_settings)
    if client.schema:
        settings["search_path"] = client.schema
    extra = {k: v for k, v in client.extra.items() if k in _CONNECT_PARAMS}
    return {
        **extra,
        "host": client.host,
        "port": client.port,
        "user": client.user,
        "password": client.password,
        "database": client.database,
        "server_settings": settings,
    }


_sqlite_writer: _SqliteBatchWriter | None = None
_postgres_writer: _PostgresBatchWriter | None = None


async def store_batch(samples: Sequence[Sample]) -> None:
    """Write a batch in one transaction: every sample to history, the newest to its device.

    Raises SampleRefused (an IntegrityError) when the database refused a row of the batch.
    """
    global _sqlite_writer, _postgres_writer
    if not samples:
        return
    conn = connections.get("default")
    dialect = conn.capabilities.dialect
    if dialect == "postgres":
        if _postgres_writer is None:
            _postgres_writer = _PostgresBatchWriter(_asyncpg_connect_kwargs(conn))
        await _postgres_writer.write(samples)
        return
    if conn.filename != ":memory:":  # type: ignore[attr-defined]
        if _sqlite_writer is None:
            pragmas = {"busy_timeout": 5000, **conn.pragmas}  # type: ignore[attr-defined]
            _sqlite_writer = _SqliteBatchWriter(conn.filename, pragmas)  # type: ignore[attr-defined]
        try:
            await _sqlite_writer.write(samples)
        except sqlite3.IntegrityError as exc:
            raise SampleRefused(str(exc)) from exc
        return
    # In-memory SQLite (unit tests): a second connection would see another, empty database.
    newest = {s.device_id: s for s in samples}
    async with in_transaction("default") as tx:
        await tx.execute_many(
            "INSERT INTO telemetry (device_id, received_at, payload, source) VALUES (?, ?, ?, ?)",
            [[s.device_id, _ts(s.received_at), s.payload_json, s.source] for s in samples],
        )
        await tx.execute_many(
            "UPDATE devices SET last_payload = ?, last_payload_at = ?, last_seen = ? WHERE id = ?",
            [[s.payload_json, _ts(s.received_at), _ts(s.received_at), s.device_id] for s in newest.values()],
        )


def close_batch_writer() -> None:
    global _sqlite_writer, _postgres_writer
    if _sqlite_writer is not None:
        _sqlite_writer.close()
        _sqlite_writer = None
    if _postgres_writer is not None:
        _postgres_writer.close()
        _postgres_writer = None


def _ts(value: datetime) -> str:
    # Tortoise stores SQLite datetimes as ISO text with a space separator.
    return value.isoformat(sep=" ")
