"""Hardware accessories: register N accessories by MAC, log each in, publish telemetry over MQTT.

gatehouse sim accessory --count 5 --interval 1 --duration 10 [--tls]

A network client only, like the ESP32 simulator (whose publishing it shares): the Hardware API
(`/v1/`, JSON headers) for registration and login, then MQTT with the MAC as username and the
accessory's access token as password.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from firmware_sim.esp32 import (
    ACK_TIMEOUT_S,
    CONNECT_BATCH,
    Board,
    SetupError,
    add_common_arguments,
    check_common,
    endpoints,
    publish_over_mqtt,
)
from firmware_sim.mqtt import MqttError
from firmware_sim.stats import Progress, Stats

JSON = {"Accept": "application/json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--mac-prefix",
        default="02:53:49",
        help="first three octets of the MACs (default 02:53:49, locally administered); the rest is random",
    )
    parser.add_argument("--model", default="Sim Sensor", help="hardware_model to register")


@dataclass
class Accessory(Board):
    """A battery sensor: its MAC is its MQTT username."""

    battery: float = 100.0

    def reading(self, interval: float) -> dict[str, Any]:
        self.battery = max(0.0, self.battery - random.uniform(0, 0.05))
        return {
            "battery_pct": round(self.battery, 2),
            "temperature_c": round(random.gauss(21.0, 0.8), 2),
            "rssi": random.randint(-90, -50),
            "uptime_s": int(time.monotonic() - self.boot),
        }


async def _call(session: aiohttp.ClientSession, method: str, url: str, body: Any, headers: dict[str, str]) -> Any:
    async with session.request(method, url, json=body, headers={**JSON, **headers}) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 400:
            detail = data.get("detail") if isinstance(data, dict) else data
            raise SetupError(f"{method} {url} -> {resp.status}: {detail}")
        return data


async def setup_accessories(
    session: aiohttp.ClientSession, args: argparse.Namespace, base: str, progress: Progress
) -> list[Accessory]:
    async with session.post(f"{base}/auth/login", json={"username": args.user, "password": args.password}) as resp:
        login = await resp.json(content_type=None)
        if resp.status != 200:
            raise SetupError(f"login as {args.user} -> {resp.status}: {login.get('detail')}")
    user = {"Authorization": login["access_token"]}  # the Hardware API's bare form
    limit = asyncio.Semaphore(CONNECT_BATCH)
    done: list[Accessory] = []

    async def one(i: int) -> Accessory:
        mac = args.mac_prefix.lower() + "".join(f":{b:02x}" for b in secrets.token_bytes(3))
        password = secrets.token_urlsafe(12)
        async with limit:
            body = {"password": password, "hardware_model": args.model, "firmware_version": "1.0.0",
                    "settings_key": f"sim-{i}"}  # fmt: skip
            record = await _call(session, "POST", f"{base}/v1/accessory/{mac}/register", body, user)
            token = await _call(session, "POST", f"{base}/v1/accessory/{mac}/login", {"password": password}, {})
        accessory = Accessory(mac, record["device_id"], mac, token["access_token"], f"devices/{mac}/telemetry", "sim")
        done.append(accessory)
        progress.update(f"registered {len(done)}/{args.count}")
        return accessory

    return list(await asyncio.gather(*(one(i) for i in range(args.count))))


async def run(args: argparse.Namespace, settings: Any) -> int:
    problem = check_common(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    base, ssl_ctx = endpoints(args, settings)
    stats = Stats()
    timeout = aiohttp.ClientTimeout(total=ACK_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=CONNECT_BATCH)) as session:
        setup = Progress("accessory")
        try:
            accessories = await setup_accessories(session, args, base, setup)
        except (SetupError, aiohttp.ClientError, TimeoutError) as exc:
            setup.close()
            print(f"gatehouse sim: setup failed: {exc}", file=sys.stderr)
            return 1
        setup.close()
        print(f"{len(accessories)} accessories registered and logged in; publishing over mqtt"
              f"{' (tls)' if ssl_ctx else ''}", file=sys.stderr)  # fmt: skip
        try:
            await publish_over_mqtt(accessories, args, ssl_ctx, stats, Progress("accessory"))  # type: ignore[arg-type]
        except (OSError, MqttError, TimeoutError) as exc:
            print(f"\ngatehouse sim: {exc!r}", file=sys.stderr)
            return 1
    lost = stats.sent - stats.acked
    print(
        f"summary: accessories={len(accessories)} transport=mqtt{'+tls' if ssl_ctx else ''} "
        f"registered={len(accessories)} sent={stats.sent} acknowledged={stats.acked} rejected={stats.rejected} "
        f"lost={lost} reconnects={stats.reconnects} latency_p50_ms={stats.p50:.1f} latency_p99_ms={stats.p99:.1f}"
    )
    return 0 if stats.rejected == 0 and lost == 0 else 1
