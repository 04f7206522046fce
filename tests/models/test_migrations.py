"""Schema migrations: they agree with the models, and a database made before them is adopted intact.

Runs on the backend the suite runs on (GATEHOUSE_TEST_DB): SQLite files, or fresh PostgreSQL databases.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from tortoise import Tortoise, connections
from tortoise.migrations.autodetector import MigrationAutodetector
from tortoise.migrations.executor import MigrationTarget

from handlers.accounts import create_user
from handlers.secrets import hash_password
from models.db import APP, INITIAL, _executor, close_db, db_status, init_db, tortoise_config, upgrade_db
from models.devices import Device, DeviceClaim
from models.telemetry import Telemetry
from tests import support
from tests.support import PASSWORD, Api, Server, gatehouse


@pytest.fixture
def new_url(tmp_path: Path) -> Iterator[object]:
    """Make fresh, empty databases on the suite's backend: new_url(name) -> URL."""
    made: list[str] = []

    def make(name: str) -> str:
        url = support.new_database_url() or f"sqlite://{tmp_path / name}.db"
        made.append(url)
        return url

    yield make
    for url in made:
        if url.startswith("postgres"):
            support.cluster().drop_database(url)


async def _schema() -> list[str]:
    """The schema of the open database, one normalised line per table, column and index."""
    conn = connections.get("default")
    if conn.capabilities.dialect == "sqlite":
        # Column by column (a column added by a migration comes last in SQLite's CREATE text).
        _, tables = await conn.execute_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'tortoise_migrations%' "
            "AND name NOT LIKE 'sqlite_%'"
        )
        out = []
        for table in (r["name"] for r in tables):
            for pragma in ("table_info", "foreign_key_list"):
                _, rows = await conn.execute_query(f'PRAGMA {pragma}("{table}")')
                skip = {"cid"} if pragma == "table_info" else {"id", "seq"}
                out += [f"{table} {pragma} {sorted((k, v) for k, v in dict(r).items() if k not in skip)}" for r in rows]
            _, indexes = await conn.execute_query(f'PRAGMA index_list("{table}")')
            for index in indexes:
                _, cols = await conn.execute_query(f'PRAGMA index_info("{index["name"]}")')
                out.append(f"{table} index unique={index['unique']} {[c['name'] for c in cols]}")
        return sorted(out)
    _, cols = await conn.execute_query(
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name <> 'tortoise_migrations'"
    )
    _, idx = await conn.execute_query(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename <> 'tortoise_migrations'"
    )
    _, cons = await conn.execute_query(
        "SELECT conrelid::regclass::text AS t, pg_get_constraintdef(oid) AS d FROM pg_constraint "
        "WHERE connamespace = current_schema()::regnamespace AND conrelid::regclass::text <> 'tortoise_migrations'"
    )
    return sorted(
        [str(tuple(r.values())) for r in cols] + [r["indexdef"] for r in idx] + [f"{r['t']} {r['d']}" for r in cons]
    )


LEGACY_TABLES = (
    "commands", "device_claims", "devices", "mqtt_queued_messages", "mqtt_sessions", "provisioning_tokens",
    "refresh_tokens", "telemetry", "users",
)  # fmt: skip


async def _dump(columns: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Every row of the initial schema's tables, as text, in primary-key order; with `columns`, only
    those columns (a later migration may have added some)."""
    conn = connections.get("default")
    out = {}
    for table in LEGACY_TABLES:
        _, rows = await conn.execute_query(f'SELECT * FROM "{table}" ORDER BY 1')
        keep = None if columns is None else set(columns[table])
        out[table] = [repr(sorted((k, str(v)) for k, v in dict(r).items() if keep is None or k in keep)) for r in rows]
    return out


async def _columns() -> dict[str, list[str]]:
    conn = connections.get("default")
    out = {}
    for table in LEGACY_TABLES:
        _, rows = await conn.execute_query(f'SELECT * FROM "{table}" LIMIT 1')
        out[table] = list(dict(rows[0])) if rows else []
    return out


async def test_models_and_migrations_agree(db_url: str) -> None:
    """A model changed without its migration fails here: run `tortoise makemigrations` (docs/migrations.md)."""
    ctx = await init_db(db_url)
    try:
        config = tortoise_config(db_url)
        writers = await MigrationAutodetector(Tortoise.apps, config["apps"]).changes()
        assert [(w.name, [type(op).__name__ for op in w.operations]) for w in writers] == []
        assert (await db_status()).current
    finally:
        await close_db(ctx)


async def test_migrated_schema_is_the_models_schema(new_url) -> None:
    """What the migrations build is, table for table and index for index, what the models describe."""
    ctx = await Tortoise.init(config=tortoise_config(new_url("generated")))
    try:
        await Tortoise.generate_schemas(safe=False)
        generated = await _schema()
    finally:
        await close_db(ctx)
    ctx = await init_db(new_url("migrated"))
    try:
        migrated = await _schema()
    finally:
        await close_db(ctx)
    assert len(generated) > 10
    assert migrated == generated


def _literal(value: object, dialect: str) -> str:
    """A value as an SQL literal of the open backend (the legacy rows are written without the ORM)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE") if dialect == "postgres" else str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'" if dialect == "postgres" else f"X'{value.hex()}'"
    if isinstance(value, datetime):
        value = value.isoformat(sep=" ")
    elif isinstance(value, (dict, list)):
        value = json.dumps(value, separators=(",", ":"))
    return "'" + str(value).replace("'", "''") + "'"


async def _fill_legacy(url: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """A database as Gatehouse made it before migrations: exactly the initial schema (made here by
    the first migration, its record then dropped), with a row in every table. The rows are written
    in SQL, not through the models, which by now describe a later schema."""
    ctx = await init_db(url, upgrade=False)
    try:
        conn = connections.get("default")
        await _executor().migrate([MigrationTarget(APP, INITIAL)])
        await conn.execute_script('DROP TABLE "tortoise_migrations"')
        dialect = "postgres" if conn.capabilities.dialect != "sqlite" else "sqlite"
        now = datetime.now(UTC)
        user_id = str(uuid.uuid4())
        rows: list[tuple[str, dict[str, object]]] = [
            (
                "users",
                {
                    "id": user_id,
                    "created": now,
                    "modified": now,
                    "username": "legacy@example.com",
                    "password_hash": await hash_password(PASSWORD),
                    "account_type": "customer",
                    "account_status": "active",
                    "account_status_updated": now,
                    "first_name": "Lea",
                    "last_name": "Gacy",
                    "phone_number": "",
                },
            ),
            (
                "refresh_tokens",
                {
                    "user_id": user_id,
                    "token_hash": "r" * 64,
                    "created": now,
                    "expires_at": now + timedelta(days=30),
                    "revoked_at": None,
                },
            ),
            (
                "devices",
                {
                    "created": now,
                    "kind": "esp32",
                    "name": "old meter",
                    "location": "",
                    "owner_id": user_id,
                    "username": "esp32-legacy",
                    "api_key_hash": "k" * 64,
                    "api_key_created_at": now,
                    "metadata": {"fw": "0.9"},
                    "online": False,
                    "last_seen": now,
                    "last_payload": {"voltage": 230.5},
                    "last_payload_at": now,
                },
            ),
        ]
        for table, row in rows:
            await _insert(conn, dialect, table, row)
        _, found = await conn.execute_query('SELECT "id" FROM "devices"')
        device_id = found[0]["id"]
        rows = [
            ("provisioning_tokens", {
                "device_id": device_id, "token_hash": "t" * 64, "notes": "spare", "created": now,
                "expires_at": None, "used_at": now,
            }),
            ("device_claims", {
                "device_id": device_id, "claimed_at": now, "metadata": {"fw": "0.9"}, "source": "http",
                "remote": "10.0.0.7",
            }),
            *(
                ("telemetry", {
                    "device_id": device_id, "received_at": now - timedelta(minutes=i), "payload": {"i": i},
                    "source": "mqtt",
                })
                for i in range(25)
            ),
            ("commands", {
                "req_id": "c" * 32, "device_id": device_id, "payload": {"method": "reboot"}, "status": "ok",
                "result": {"status": "ok"}, "created_at": now, "expires_at": now + timedelta(seconds=30),
                "answered_at": now,
            }),
            ("mqtt_sessions", {
                "client_id": "esp32-legacy", "identity": {"kind": "device"}, "subscriptions": {"a/#": 1},
                "updated_at": now,
            }),
            ("mqtt_queued_messages", {
                "id": 7, "client_id": "esp32-legacy", "topic": "devices/esp32-legacy/x", "payload": b"\x00\xff",
                "qos": 1, "retain": False,
            }),
        ]  # fmt: skip
        for table, row in rows:
            await _insert(conn, dialect, table, row)
        dump, columns = await _dump(), await _columns()
        assert (await db_status()).legacy
    finally:
        await close_db(ctx)
    assert all(dump.values()), {t: len(r) for t, r in dump.items()}
    return dump, columns


async def _insert(conn: object, dialect: str, table: str, row: dict[str, object]) -> None:
    columns = ", ".join(f'"{c}"' for c in row)
    values = ", ".join(_literal(v, dialect) for v in row.values())
    await conn.execute_script(f'INSERT INTO "{table}" ({columns}) VALUES ({values})')  # type: ignore[attr-defined]


async def test_database_from_before_migrations_is_adopted_without_losing_a_row(tmp_path: Path, new_url) -> None:
    data_dir = tmp_path / "legacy"
    data_dir.mkdir()
    url = support.new_database_url() or f"sqlite://{data_dir / 'gatehouse.db'}"
    env = {"GATEHOUSE_DATABASE__URL": url} if url.startswith("postgres") else {}
    before, columns = await _fill_legacy(url)

    status = gatehouse("db", "status", data_dir=data_dir, env=env)
    assert status.returncode == 0, status.stderr
    assert "created before migrations existed" in status.stdout and f"pending  {INITIAL}" in status.stdout

    upgrade = gatehouse("db", "upgrade", data_dir=data_dir, env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"applied {INITIAL} (adopted)" in upgrade.stdout

    ctx = await init_db(url, upgrade=False)
    try:
        assert await _dump(columns) == before
        assert (await db_status()).current
    finally:
        await close_db(ctx)
    again = gatehouse("db", "status", data_dir=data_dir, env=env)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr

    # And the server runs on it: the old user logs in and reads the old device's data.
    server = Server(data_dir, {"GATEHOUSE_AUTH__ACCESS_TOKEN_MINUTES": "30", **env})
    server.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.url)
            await api.login("legacy@example.com")
            status_code, devices = await api.call("GET", "/gateway/devices")
            assert status_code == 200 and [d["name"] for d in devices["results"]] == ["old meter"], devices
            status_code, latest = await api.call(
                "GET", f"/gateway/devices/{devices['results'][0]['id']}/telemetry/latest"
            )
            assert status_code == 200 and "230.5" in str(latest), latest
    finally:
        assert server.stop() == 0
        if url.startswith("postgres"):
            support.cluster().drop_database(url)


async def test_serve_upgrades_a_fresh_database_at_start(tmp_path: Path) -> None:
    url = support.new_database_url()
    env = {"GATEHOUSE_DATABASE__URL": url} if url else {}
    server = Server(tmp_path, env)
    server.start()
    try:
        assert "database migrated: 0001_initial" in server.log()
    finally:
        assert server.stop() == 0
    status = gatehouse("db", "status", data_dir=tmp_path, env=env)
    assert status.returncode == 0 and f"applied  {INITIAL}" in status.stdout and "up to date" in status.stdout
    if url:
        support.cluster().drop_database(url)


def test_half_made_database_is_refused_with_one_line(tmp_path: Path) -> None:
    """Tables of ours but not all of them: refuse, name what is missing, change nothing."""
    import sqlite3

    db = tmp_path / "gatehouse.db"
    with sqlite3.connect(db) as conn:
        conn.execute('CREATE TABLE "devices" ("id" INTEGER PRIMARY KEY)')
    for command in (
        ("db", "upgrade"),
        ("serve", "--http-port", "0", "--https-port", "0", "--mqtt-port", "0", "--mqtts-port", "0", "--ws-port", "0"),
    ):
        done = gatehouse(*command, data_dir=tmp_path, env={"GATEHOUSE_DATABASE__URL": ""})
        assert done.returncode == 1, done.stdout + done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("gatehouse: database: ") and "users" in last, done.stderr
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["devices"]


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgres://gatehouse:secret@127.0.0.1:{support.free_port()}/nowhere"
    for command in (
        ("db", "status"),
        ("db", "upgrade"),
        ("users", "create", "--username", "x@example.com", "--account-type", "customer", "--password-stdin"),
    ):
        done = gatehouse(*command, data_dir=tmp_path, env={"GATEHOUSE_DATABASE__URL": url}, stdin=PASSWORD + "\n")
        assert done.returncode == 1
        assert (
            done.stderr.strip()
            .splitlines()[-1]
            .startswith("gatehouse: database: cannot open postgres://gatehouse:***@")
        )
        assert "secret" not in done.stderr and "Traceback" not in done.stderr


LATER = """
from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]
    operations = [
        ops.AlterField(model_name="Device", name="name", field=fields.CharField(max_length=300)),
        ops.AddField(
            model_name="Device",
            name="firmware",
            field=fields.CharField(max_length=40, default="unknown", db_default="unknown"),
        ),
    ]
"""


async def test_later_migration_keeps_every_row(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A column altered next month: on SQLite that copies and drops the table, which with foreign keys on
    would cascade into every referencing row (all telemetry). Nothing is lost."""
    package = tmp_path / "later_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / f"{INITIAL}.py").write_text((support.ROOT / "models" / "migrations" / f"{INITIAL}.py").read_text())
    (package / "0002_device_firmware.py").write_text(LATER)
    monkeypatch.syspath_prepend(str(tmp_path))

    ctx = await init_db(db_url)
    try:
        user = await create_user("later@example.com", PASSWORD, "customer")
        device = await Device.create(name="m" * 150, owner=user, username="esp32-later")
        now = datetime.now(UTC)
        for i in range(10):
            await Telemetry.create(device=device, received_at=now, payload={"i": i}, source="http")
        await DeviceClaim.create(device=device, metadata={}, source="http")
        before = await _dump()
        assert await upgrade_db(migrations="later_migrations") == ["0002_device_firmware"]
        after = await _dump()
        assert after["telemetry"] == before["telemetry"] and after["device_claims"] == before["device_claims"]
        conn = connections.get("default")
        _, rows = await conn.execute_query("SELECT name, firmware FROM devices")
        assert [(len(r["name"]), r["firmware"]) for r in rows] == [(150, "unknown")]
        await conn.execute_query(
            "UPDATE devices SET name = ?" if conn.capabilities.dialect == "sqlite" else "UPDATE devices SET name = $1",
            ["n" * 300],
        )
        if conn.capabilities.dialect == "sqlite":
            _, fk = await conn.execute_query("PRAGMA foreign_keys")
            assert fk[0][0] == 1  # back on
    finally:
        await close_db(ctx)
