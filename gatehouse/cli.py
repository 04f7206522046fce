"""The `gatehouse` command: serve, users, sim."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from pathlib import Path
from typing import Any

from gatehouse.settings import ConfigError, Settings, load_settings


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (default: the bundled config.yaml)")
    parser.add_argument("--data-dir", type=Path, help="data directory (database, certificates, secrets)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatehouse", description="MQTT-first IoT backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the broker and the REST API")
    _common(serve)
    for flag, key in (
        ("--http-port", "http.port"),
        ("--https-port", "http.https_port"),
        ("--mqtt-port", "broker.mqtt_port"),
        ("--mqtts-port", "broker.mqtts_port"),
        ("--ws-port", "broker.ws_port"),
    ):
        serve.add_argument(flag, type=int, dest=key, help=f"{key} (0 turns the listener off)")

    users = sub.add_parser("users", help="manage user accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create an active user (the first administrator)")
    _common(create)
    create.add_argument("--username", required=True)
    create.add_argument("--account-type", required=True, choices=["gooee", "partner", "customer"])
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    sim = sub.add_parser("sim", help="device simulators")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    from firmware_sim.esp32 import add_arguments

    esp32 = sim_sub.add_parser("esp32", help="ESP32 boards: provision, claim, publish telemetry")
    _common(esp32)
    add_arguments(esp32)
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
    try:
        if args.command == "serve":
            from gatehouse.server import serve

            ports = {k: v for k, v in vars(args).items() if "." in k}
            _run(serve(_settings(args, ports)))
        elif args.command == "users":
            return _run(_create_user(args))
        elif args.command == "sim":
            from firmware_sim.esp32 import run

            return _run(run(args, _settings(args)))
    except ConfigError as exc:
        print(f"gatehouse: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def _create_user(args: argparse.Namespace) -> int:
    from handlers.accounts import create_user
    from handlers.errors import GatehouseError
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
        user = await create_user(args.username, password, args.account_type)
    except GatehouseError as exc:
        print(f"gatehouse: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await close_db(db)
    print(f"created {user.account_type} user {user.username} ({user.id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
