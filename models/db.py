"""Database start and stop, and the schema's versioned migrations (Tortoise ORM's own)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tortoise import Tortoise, connections
from tortoise.migrations.executor import MigrationExecutor, MigrationTarget
from tortoise.migrations.operations import CreateModel

log = logging.getLogger(__name__)

APP = "models"
MIGRATIONS = "models.migrations"
MODEL_MODULES = [
    "models.accounts",
    "models.tenancy",
    "models.devices",
    "models.accessories",
    "models.gateway_lite",
    "models.iotlock",
    "models.telemetry",
    "models.commands",
    "models.sessions",
    "models.outbox",
]
# The first migration describes the schema `generate_schemas` made before migrations existed.
INITIAL = "0001_initial"


class DatabaseError(Exception):
    """The database cannot be opened or used; the message says why, in one line."""


class MigrationError(DatabaseError):
    """The database cannot be brought to the schema this code expects; the message says why."""


@dataclass(frozen=True)
class DbStatus:
    applied: list[str]
    pending: list[str]
    legacy: bool  # tables made before migrations existed; the first upgrade adopts them

    @property
    def current(self) -> bool:
        return not self.pending and not self.legacy


def tortoise_config(url: str) -> dict[str, Any]:
    return {
        "connections": {"default": url},
        "apps": {APP: {"models": MODEL_MODULES, "default_connection": "default", "migrations": MIGRATIONS}},
        "use_tz": True,
        "timezone": "UTC",
    }


# For Tortoise's own CLI (`tortoise makemigrations`, see [tool.tortoise] in pyproject.toml).
TORTOISE_ORM = tortoise_config("sqlite://:memory:")


async def init_db(url: str, *, upgrade: bool = True) -> Any:
    """Open the database (and, unless told not to, migrate it to head); returns the context to close."""
    ctx = await Tortoise.init(config=tortoise_config(url))
    try:
        try:
            await ping()
        except Exception as exc:  # refused, unknown host, no such database, bad password...
            raise DatabaseError(f"cannot open {safe_url(url)}: {exc}") from exc
        if upgrade:
            await upgrade_db()
    except BaseException:
        await close_db(ctx)
        raise
    return ctx


def safe_url(url: str) -> str:
    """The database URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def _executor(migrations: str = MIGRATIONS) -> MigrationExecutor:
    apps = tortoise_config("")["apps"]
    apps[APP]["migrations"] = migrations
    return MigrationExecutor(connections.get("default"), apps)


async def db_status() -> DbStatus:
    executor = _executor()
    steps = await executor.plan()
    applied = sorted(k.name for k in await executor.recorder.applied_migrations() if k.app_label == APP)
    legacy = not applied and bool(await _existing_tables() & _initial_tables(executor))
    return DbStatus(applied, [s.migration.name for s in steps if not s.backward], legacy)


async def upgrade_db(progress: Callable[[str], object] | None = None, *, migrations: str = MIGRATIONS) -> list[str]:
    """Apply every pending migration; returns the names applied (adopted ones end in " (adopted)")."""
    executor = _executor(migrations)
    done: list[str] = []
    if (await db_status()).legacy:
        await _adopt(executor)
        done.append(f"{INITIAL} (adopted)")
        if progress:
            progress(done[-1])

    def report(event: str, _app: str, name: str) -> None:
        if event == "apply_done":
            done.append(name)
            if progress:
                progress(name)

    conn = connections.get("default")
    sqlite = conn.capabilities.dialect == "sqlite"
    if sqlite:
        # SQLite alters a column by copying the table and dropping the old one; with foreign keys
        # on, that DROP cascades and deletes every row that references the table (all telemetry
        # of every device). SQLite's own procedure: keys off around the change, then check them.
        await conn.execute_script("PRAGMA foreign_keys = OFF")
    try:
        await executor.migrate(progress=report)
        if sqlite:
            _, broken = await conn.execute_query("PRAGMA foreign_key_check")
            if broken:
                raise MigrationError(f"after {', '.join(done)}: {len(broken)} rows break a foreign key")
    finally:
        if sqlite:
            await conn.execute_script("PRAGMA foreign_keys = ON")
    if done:
        log.info("database migrated: %s", ", ".join(done))
    return done


async def _adopt(executor: MigrationExecutor) -> None:
    """A database made by `generate_schemas` (before migrations) has exactly the initial schema:
    record the initial migration as applied without running it, so no row is touched."""
    missing = _initial_tables(executor) - await _existing_tables()
    if missing:
        raise MigrationError(
            f"the database has some of Gatehouse's tables but not {', '.join(sorted(missing))}: "
            "it was not made by Gatehouse, or is damaged; restore a backup or point database.url elsewhere"
        )
    log.info("adopting a database created before migrations existed as %s", INITIAL)
    await executor.migrate([MigrationTarget(APP, INITIAL)], fake=True)


def _initial_tables(executor: MigrationExecutor) -> set[str]:
    executor.loader.load_disk()
    migration = executor.loader.disk_migrations[next(k for k in executor.loader.disk_migrations if k.name == INITIAL)]
    return {op.options["table"] for op in migration.operations if isinstance(op, CreateModel)}


async def _existing_tables() -> set[str]:
    conn = connections.get("default")
    if conn.capabilities.dialect == "sqlite":
        _, rows = await conn.execute_query("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r["name"] for r in rows}
    _, rows = await conn.execute_query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r["tablename"] for r in rows}


async def close_db(ctx: Any) -> None:
    from models.telemetry import close_batch_writer

    close_batch_writer()
    # Close the context Tortoise.init returned: under pytest teardown the global
    # Tortoise.close_connections() can run in another task and find nothing (aiosqlite's
    # non-daemon worker thread then hangs the process at exit).
    if ctx is not None and hasattr(ctx, "close_connections"):
        await ctx.close_connections()
    else:
        await connections.close_all()


async def ping() -> bool:
    conn = connections.get("default")
    await conn.execute_query("SELECT 1")
    return True
