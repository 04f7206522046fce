"""The `gatehouse` command: serve, db, users, outbox, sim."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

from gatehouse.settings import ConfigError, Settings, load_settings


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and examples kept as written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (default: the bundled config.yaml)")
    parser.add_argument("--data-dir", type=Path, help="data directory (database, certificates, secrets)")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gatehouse",
        description="MQTT-first IoT backend: an embedded MQTT broker and a REST API over one handler pipeline.",
        epilog=_examples(
            "gatehouse serve", "gatehouse db status", "gatehouse users create --username a@b.c --account-type gooee"
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('gatehouse')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser(
        "serve",
        help="run the broker and the REST API",
        description="Run the MQTT broker (TCP, TLS, WebSocket) and the REST API (HTTP, HTTPS) on one loop. "
        "Pending database migrations are applied first; dev TLS certificates are made on first start.",
        epilog=_examples("gatehouse serve", "gatehouse serve --http-port 9080 --ws-port 0   # 0 turns a listener off"),
    )
    _common(serve)
    for flag, key in (
        ("--http-port", "http.port"),
        ("--https-port", "http.https_port"),
        ("--mqtt-port", "broker.mqtt_port"),
        ("--mqtts-port", "broker.mqtts_port"),
        ("--ws-port", "broker.ws_port"),
    ):
        serve.add_argument(flag, type=int, dest=key, help=f"{key} (0 turns the listener off)")

    db = sub.add_parser(
        "db",
        help="database schema: status and upgrade",
        description="The database schema is versioned (models/migrations/). `serve` upgrades at start; "
        "these commands let you look first, or upgrade without starting.",
        epilog=_examples("gatehouse db status", "gatehouse db upgrade"),
    )
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND", parser_class=_Parser)
    status = db_sub.add_parser(
        "status",
        help="show which migrations are applied and which are pending",
        description="Show where the database stands: applied migrations, pending ones, and whether it was "
        "created before migrations existed (the first upgrade adopts such a database without touching a row).",
        epilog=_examples(
            "gatehouse db status", "GATEHOUSE_DATABASE__URL=postgres://u:p@db:5432/gatehouse gatehouse db status"
        ),
    )
    _common(status)
    upgrade = db_sub.add_parser(
        "upgrade",
        help="apply every pending migration",
        description="Apply every pending migration in order, each in its own transaction, and print each one.",
        epilog=_examples("gatehouse db upgrade", "gatehouse db upgrade --data-dir /var/lib/gatehouse"),
    )
    _common(upgrade)

    users = sub.add_parser(
        "users",
        help="manage user accounts",
        description="Manage user accounts from the command line.",
        epilog=_examples("gatehouse users create --username admin@example.com --account-type gooee"),
    )
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND", parser_class=_Parser)
    create = users_sub.add_parser(
        "create",
        help="create an active user (the first administrator)",
        description="Create an active user. The password is prompted for twice, or read from standard input.",
        epilog=_examples(
            "gatehouse users create --username admin@example.com --account-type gooee",
            "echo 'S3cret!pass' | gatehouse users create --username a@example.com --account-type customer "
            "--password-stdin",
            "gatehouse users create --username ops@acme.test --account-type partner --partner PARTNER_ID",
        ),
    )
    _common(create)
    create.add_argument("--username", required=True)
    create.add_argument("--account-type", required=True, choices=["gooee", "partner", "customer"])
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    tenant = create.add_mutually_exclusive_group()
    tenant.add_argument("--partner", metavar="ID", help="the partner of a partner user (required for one)")
    tenant.add_argument("--customer", metavar="ID", help="the customer of a customer user")

    partners = sub.add_parser(
        "partners",
        help="manage partners (the first ones; then use the REST API)",
        description="Create a partner from the command line; prints its id.",
        epilog=_examples("gatehouse partners create --name 'Acme Lighting' --gateway-lite-provider"),
    )
    partners_sub = partners.add_subparsers(
        dest="partners_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    partner = partners_sub.add_parser(
        "create",
        help="create a partner and print its id",
        description="Create a partner and print its id (for `users create --partner`).",
        epilog=_examples(
            "gatehouse partners create --name 'Acme Lighting'",
            "P=$(gatehouse partners create --name Acme) && gatehouse users create --username ops@acme.test "
            "--account-type partner --partner $P",
        ),
    )
    _common(partner)
    partner.add_argument("--name", required=True)
    partner.add_argument("--gateway-lite-provider", action="store_true", help="the partner provides Gateway Lites")

    outbox = sub.add_parser(
        "outbox",
        help="list the mail and SMS that were sent (or are waiting), newest first",
        description="List outgoing mail and SMS, newest first: recipient, subject, body, when, and delivery "
        "state (sent, pending with its attempts and last error, failed, or logged: no mail server is "
        "configured, so the outbox is where the message went). Read an activation key or a reset link here.",
        epilog=_examples(
            "gatehouse outbox",
            "gatehouse outbox --to alice@example.com --limit 1",
            "gatehouse outbox --json | jq -r '.[0].body'",
        ),
    )
    _common(outbox)
    outbox.add_argument("--to", metavar="ADDRESS", help="only messages to this address (any case)")
    outbox.add_argument("--limit", type=_positive, default=20, help="at most this many messages (default 20)")
    outbox.add_argument("--json", action="store_true", help="a JSON list instead of text")

    sim = sub.add_parser(
        "sim",
        help="device simulators",
        description="Device simulators that speak the real protocols to a running server.",
        epilog=_examples("gatehouse sim esp32 --count 20 --interval 1 --duration 30"),
    )
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="COMMAND", parser_class=_Parser)
    from firmware_sim.esp32 import add_arguments

    esp32 = sim_sub.add_parser(
        "esp32",
        help="ESP32 boards: provision, claim, publish telemetry",
        description="Create, provision and claim N boards through the REST API, then publish readings over "
        "MQTT (QoS 1) or HTTP; prints progress and a summary.",
        epilog=_examples(
            "GATEHOUSE_SIM_USER=admin@example.com GATEHOUSE_SIM_PASSWORD=... "
            "gatehouse sim esp32 --count 20 --interval 1 --duration 30 --tls"
        ),
    )
    _common(esp32)
    add_arguments(esp32)
    from firmware_sim import accessory as accessory_sim

    accessory = sim_sub.add_parser(
        "accessory",
        help="hardware accessories: register by MAC, log in, publish telemetry",
        description="Register N accessories with random MACs through the Hardware API (/v1/), log each in, "
        "then publish readings over MQTT (QoS 1) with its token as password; prints progress and a summary.",
        epilog=_examples(
            "GATEHOUSE_SIM_USER=admin@example.com GATEHOUSE_SIM_PASSWORD=... "
            "gatehouse sim accessory --count 5 --interval 1 --duration 10 --tls"
        ),
    )
    _common(accessory)
    accessory_sim.add_arguments(accessory)
    from firmware_sim import gateway_lite as gateway_lite_sim

    gateway_lite = sim_sub.add_parser(
        "gateway-lite",
        help="Gateway Lites from an import CSV: connect each, print the fingerprint lists it holds",
        description="Connect every Gateway Lite in an import CSV over MQTT (its serial number as username, its "
        "installation code as password), subscribe each to devices/<euid>/fingerprints (QoS 1) and print every "
        "fingerprint list it receives, for --duration seconds or until Ctrl-C; prints progress and a summary. "
        "Exits 2 on a bad CSV, 1 unless every gateway connected and stayed connected.",
        epilog=_examples(
            "gatehouse sim gateway-lite --csv gateways.csv --duration 30",
            "gatehouse sim gateway-lite --csv gateways.csv --duration 600 --tls",
        ),
    )
    _common(gateway_lite)
    gateway_lite_sim.add_arguments(gateway_lite)
    from firmware_sim import iotlock as lock_sim

    lock = sim_sub.add_parser(
        "lock",
        help="IoTLock gateways and mailboxes: add them, answer their commands, type PINs at keypads",
        description="Log in as a member of an IoTLock account, add N gateways with M mailboxes each through the "
        "API, connect every gateway over MQTT with a persistent session, keep each mailbox's PINs as the commands "
        "arrive, answer every command and report a BATTERY event per mailbox. --pin adds a PIN through the API "
        "(mailboxes are numbered 1.. over all gateways); --enter-pin then types one at a mailbox's keypad "
        "(UNLOCKED or PIN_REJECTED). Runs for --duration seconds or until Ctrl-C; prints a summary. Exits 1 on a "
        "setup error, or when a message was refused or a gateway dropped.",
        epilog=_examples(
            "GATEHOUSE_SIM_USER=me@example.com GATEHOUSE_SIM_PASSWORD=... "
            "gatehouse sim lock --gateways 2 --mailboxes 2 --pin 1:4321 --enter-pin 1:4321 --duration 30",
            "gatehouse sim lock --user me@example.com --password ... --gateways 1 --mailboxes 3 --tls",
        ),
    )
    _common(lock)
    lock_sim.add_arguments(lock)
    return parser


def _settings(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Settings:
    overrides: dict[str, Any] = {"data_dir": args.data_dir, **(extra or {})}
    return load_settings(args.config, overrides)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # amqtt logs every connection at INFO; keep its warnings only.
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    from models.db import DatabaseError

    try:
        if args.command == "serve":
            from gatehouse.server import serve

            ports = {k: v for k, v in vars(args).items() if "." in k}
            _run(serve(_settings(args, ports)))
        elif args.command == "db":
            return _run(_db(args))
        elif args.command == "users":
            return _run(_create_user(args))
        elif args.command == "partners":
            return _run(_create_partner(args))
        elif args.command == "outbox":
            return _run(_outbox(args))
        elif args.command == "sim":
            from firmware_sim import accessory, esp32, gateway_lite, iotlock

            simulator = {"accessory": accessory, "esp32": esp32, "gateway-lite": gateway_lite, "lock": iotlock}[
                args.sim_command
            ]
            return _run(simulator.run(args, _settings(args)))
    except ConfigError as exc:
        print(f"gatehouse: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"gatehouse: database: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a port is taken, a file is unreadable
        print(f"gatehouse: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _db(args: argparse.Namespace) -> int:
    from models.db import close_db, db_status, init_db, safe_url, upgrade_db

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await init_db(settings.database_url, upgrade=False)
    try:
        print(f"database {safe_url(settings.database_url)}")
        if args.db_command == "upgrade":
            applied = await upgrade_db(progress=lambda name: print(f"  applied {name}", flush=True))
            state = await db_status()
            head = state.applied[-1] if state.applied else "(none)"
            print(f"{len(applied)} migration(s) applied; at {head}" if applied else f"already at {head}")
            return 0
        state = await db_status()
        for name in state.applied:
            print(f"  applied  {name}")
        for name in state.pending:
            print(f"  pending  {name}")
        if state.legacy:
            print("created before migrations existed: `gatehouse db upgrade` (or serve) adopts it, keeping every row")
        elif state.pending:
            print(f"{len(state.pending)} pending: run `gatehouse db upgrade` (serve applies them at start)")
        else:
            print("up to date")
        return 0
    finally:
        await close_db(db)


async def _create_user(args: argparse.Namespace) -> int:
    from handlers.errors import GatehouseError
    from handlers.tenancy import create_tenant_user
    from models.db import close_db, init_db

    settings = _settings(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password (again): "):
            print("gatehouse: passwords differ", file=sys.stderr)
            return 1
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await init_db(settings.database_url)
    try:
        user = await create_tenant_user(
            args.username, password, args.account_type, partner=args.partner, customer=args.customer
        )
    except GatehouseError as exc:
        print(f"gatehouse: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await close_db(db)
    print(f"created {user.account_type} user {user.username} ({user.id})")
    return 0


async def _create_partner(args: argparse.Namespace) -> int:
    from models.db import close_db, init_db
    from models.tenancy import Partner

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await init_db(settings.database_url)
    try:
        name = args.name.strip()
        if not name or len(name) > 200:
            print("gatehouse: --name must be 1 to 200 characters", file=sys.stderr)
            return 1
        partner = await Partner.create(name=name, is_gateway_lite_provider=args.gateway_lite_provider)
    finally:
        await close_db(db)
    print(partner.id)
    return 0


async def _outbox(args: argparse.Namespace) -> int:
    from handlers.outbox import list_messages
    from models.db import close_db, db_status, init_db

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await init_db(settings.database_url, upgrade=False)
    try:
        if not (await db_status()).current:
            print("gatehouse: the database schema is not current: run `gatehouse db upgrade`", file=sys.stderr)
            return 1
        messages = await list_messages(args.to, args.limit)
    finally:
        await close_db(db)
    if args.json:
        print(json.dumps(messages, indent=2))
        return 0
    if not messages:
        print("no messages" + (f" to {args.to}" if args.to else ""))
    for m in messages:
        state = m["state"]
        if state == "pending":
            error = f"; last error: {m['last_error']}" if m["last_error"] else ""
            state += f", {m['attempts']} attempt(s) so far{error}"
        elif state == "failed":
            state += f" ({m['last_error']})"
        print(f"#{m['id']} {m['created']} {m['channel']} to {m['to']} [{state}]")
        if m["subject"]:
            print(f"Subject: {m['subject']}")
        print("\n".join(f"    {line}" for line in m["body"].splitlines()) or "    (empty)")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
