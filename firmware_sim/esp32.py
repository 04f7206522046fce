"""ESP32 energy-meter boards: log in, provision and claim N devices, then publish telemetry.

gatehouse sim esp32 --count 10 --interval 5 --duration 60 [--tls] [--mqtt | --http]

A network client only: it talks to the server over REST and MQTT and imports nothing of the
server. The `settings` object it is given is read (duck-typed) for default ports and the CA path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from firmware_sim.mqtt import MqttClient, MqttError
from firmware_sim.stats import Progress, Stats

CONNECT_BATCH = 50  # concurrent CONNECTs (or claims) while ramping up
KEEPALIVE_S = 30
ACK_TIMEOUT_S = 10.0  # a PUBACK / HTTP answer slower than this counts as lost
ERRORS_GRACE_S = 0.3  # wait this long after the last publish for late errors-topic messages


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    door = parser.add_mutually_exclusive_group()
    door.add_argument("--mqtt", dest="transport", action="store_const", const="mqtt", help="MQTT QoS 1 (default)")
    door.add_argument("--http", dest="transport", action="store_const", const="http", help="HTTP ingest")
    parser.set_defaults(transport="mqtt")
    parser.add_argument("--prefix", default="sim-esp32", help="device name prefix: <prefix>-<i>")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """What every simulator takes: how many, how often, for how long, and where the server is."""
    parser.add_argument("--count", type=int, default=1, help="number of simulated devices")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between readings per device")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to publish for")
    parser.add_argument("--tls", action="store_true", help="MQTT over TLS (verified against --cafile)")
    parser.add_argument("--url", help="REST base URL (default http://127.0.0.1:<http.port>)")
    parser.add_argument(
        "--user", default=os.environ.get("GATEHOUSE_SIM_USER"), help="owner account ($GATEHOUSE_SIM_USER)"
    )
    parser.add_argument(
        "--password", default=os.environ.get("GATEHOUSE_SIM_PASSWORD"), help="its password ($GATEHOUSE_SIM_PASSWORD)"
    )
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, help="MQTT port (default broker.mqtt_port, or mqtts_port with --tls)")
    parser.add_argument("--cafile", type=Path, help="CA for --tls (default <data-dir>/certs/ca.crt)")


class SetupError(Exception):
    """The REST side refused something during login / device setup."""


@dataclass
class Board:
    """One simulated ESP32 energy meter: its identity and its slowly drifting readings."""

    name: str
    device_id: int
    username: str
    api_key: str
    topic: str
    client_suffix: str = "esp32"  # its MQTT client id is <username>-<client_suffix>
    current: float = 0.0
    kwh: float = 0.0
    boot: float = 0.0

    def __post_init__(self) -> None:
        self.current = random.uniform(0.5, 12.0)
        self.kwh = round(random.uniform(10, 5000), 3)
        self.boot = time.monotonic()

    def reading(self, interval: float) -> dict[str, Any]:
        self.current = min(16.0, max(0.1, self.current + random.gauss(0, 0.3)))
        voltage = random.gauss(230.0, 1.5)
        pf = min(0.99, max(0.80, random.gauss(0.94, 0.03)))
        power = voltage * self.current * pf
        self.kwh += power * interval / 3_600_000
        return {
            "voltage": round(voltage, 1),
            "current": round(self.current, 2),
            "power_factor": round(pf, 3),
            "power_w": round(power, 1),
            "kwh": round(self.kwh, 4),
            "rssi": random.randint(-80, -45),
            "uptime_s": int(time.monotonic() - self.boot),
        }


# -- REST setup --------------------------------------------------------------------------------


async def _call(session: aiohttp.ClientSession, method: str, url: str, body: Any, headers: dict | None = None) -> Any:
    async with session.request(method, url, json=body, headers=headers) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 400:
            detail = data.get("detail") if isinstance(data, dict) else data
            raise SetupError(f"{method} {url} -> {resp.status}: {detail}")
        return data


async def setup_boards(session: aiohttp.ClientSession, args: argparse.Namespace, base: str) -> list[Board]:
    login = await _call(session, "POST", f"{base}/auth/login", {"username": args.user, "password": args.password})
    auth = {"Authorization": f"Bearer {login['access_token']}"}
    existing = {d["name"]: d for d in (await _call(session, "GET", f"{base}/gateway/devices", None, auth))["results"]}
    limit = asyncio.Semaphore(CONNECT_BATCH)

    async def one(i: int) -> Board:
        name = f"{args.prefix}-{i}"
        async with limit:
            device = existing.get(name) or await _call(
                session, "POST", f"{base}/gateway/devices", {"name": name, "location": "simulator"}, auth
            )
            prov = await _call(session, "POST", f"{base}/gateway/devices/{device['id']}/provision", {}, auth)
            claim = await _call(
                session,
                "POST",
                f"{base}/gateway/devices/claim",
                {"token": prov["token"], "device_metadata": {"fw": "esp32-sim/1.0.0", "chip": "ESP32-D0WD-V3"}},
            )
        mqtt = claim["mqtt"]
        return Board(name, device["id"], mqtt["username"], claim["api_key"], mqtt["telemetry_topic"])

    return list(await asyncio.gather(*(one(i) for i in range(args.count))))


# -- publishing --------------------------------------------------------------------------------


def _ticks(interval: float, duration: float, start: float) -> list[float]:
    """Send times for one board: a random phase, then every `interval` until `duration` is up."""
    phase = random.uniform(0, min(interval, duration))
    return [start + phase + k * interval for k in range(int((duration - phase) / interval) + 1)]


class MqttBoard:
    def __init__(self, board: Board, args: argparse.Namespace, ssl_ctx: ssl.SSLContext | None, stats: Stats) -> None:
        self.board, self.args, self.ssl_ctx, self.stats = board, args, ssl_ctx, stats
        self.client = MqttClient()
        self.watcher: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.client.connect(
            self.args.mqtt_host,
            self.args.mqtt_port,
            client_id=f"{self.board.username}-{self.board.client_suffix}",
            username=self.board.username,
            password=self.board.api_key,
            keepalive=KEEPALIVE_S,
            ssl=self.ssl_ctx,
        )
        async with asyncio.timeout(ACK_TIMEOUT_S):
            await self.client.subscribe(f"devices/{self.board.username}/errors", qos=0)
        if self.watcher is None:
            self.watcher = asyncio.create_task(self._watch_errors())

    async def _watch_errors(self) -> None:
        while True:
            topic, payload = await self.client.messages.get()
            if topic.endswith("/errors"):
                self.stats.rejected += 1
                print(f"\n{self.board.name}: rejected: {payload.decode(errors='replace')}", file=sys.stderr)

    async def _reconnect(self, deadline: float) -> bool:
        delay = 0.2
        while time.monotonic() < deadline:
            try:
                await self.connect()
            except (OSError, MqttError, TimeoutError):
                await self.client.disconnect()  # e.g. connected but no SUBACK: start clean next time
            else:
                self.stats.reconnects += 1
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        return False

    async def run(self, ticks: list[float], deadline: float) -> None:
        for tick in ticks:
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            payload = json.dumps(self.board.reading(self.args.interval)).encode()
            self.stats.sent += 1
            while time.monotonic() < deadline:  # firmware retries a reading until it is acknowledged
                if not self.client.connected and not await self._reconnect(deadline):
                    break
                start = time.perf_counter()
                try:
                    async with asyncio.timeout(ACK_TIMEOUT_S):
                        await self.client.publish(self.board.topic, payload, qos=1)
                except (OSError, MqttError, TimeoutError):
                    await self.client.disconnect()  # a missing PUBACK: drop the link and retry
                    continue
                self.stats.record_latency(time.perf_counter() - start)
                self.stats.acked += 1
                break

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
        with contextlib.suppress(OSError, MqttError):
            await self.client.disconnect()


async def http_board(
    session: aiohttp.ClientSession, board: Board, url: str, args: argparse.Namespace, ticks: list[float], stats: Stats
) -> None:
    headers = {"Authorization": f"Bearer {board.api_key}"}
    for tick in ticks:
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
        stats.sent += 1
        start = time.perf_counter()
        try:
            async with session.post(url, json=board.reading(args.interval), headers=headers) as resp:
                body = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            print(f"\n{board.name}: ingest failed: {exc!r}", file=sys.stderr)
            continue
        if resp.status == 200:
            stats.record_latency(time.perf_counter() - start)
            stats.acked += 1
        elif 400 <= resp.status < 500:
            stats.rejected += 1
            print(f"\n{board.name}: rejected {resp.status}: {body}", file=sys.stderr)
        else:
            print(f"\n{board.name}: ingest answered {resp.status}: {body}", file=sys.stderr)


async def _report(stats: Stats, devices: int, started: float, progress: Progress) -> None:
    while True:
        rate = stats.acked / max(time.monotonic() - started, 1e-9)
        progress.update(
            f"devices {devices} sent {stats.sent} acked {stats.acked} rejected {stats.rejected} "
            f"reconnects {stats.reconnects} ({rate:,.1f} msg/s)"
        )
        await asyncio.sleep(0.25)


async def publish_over_mqtt(
    boards: list[Board], args: argparse.Namespace, ssl_ctx: ssl.SSLContext | None, stats: Stats, progress: Progress
) -> None:
    """Connect every board (in batches), publish its readings for `args.duration`, disconnect."""
    mqtt_boards = [MqttBoard(b, args, ssl_ctx, stats) for b in boards]
    reporter: asyncio.Task[None] | None = None
    try:
        for lo in range(0, len(mqtt_boards), CONNECT_BATCH):  # ramp the connect storm
            await asyncio.gather(*(mb.connect() for mb in mqtt_boards[lo : lo + CONNECT_BATCH]))
        start = time.monotonic()
        deadline = start + args.duration + ACK_TIMEOUT_S
        reporter = asyncio.create_task(_report(stats, len(boards), start, progress))
        await asyncio.gather(*(mb.run(_ticks(args.interval, args.duration, start), deadline) for mb in mqtt_boards))
        await asyncio.sleep(ERRORS_GRACE_S)
    finally:
        if reporter is not None:
            reporter.cancel()
        progress.close()
        await asyncio.gather(*(mb.close() for mb in mqtt_boards))


async def _publish_over_http(
    session: aiohttp.ClientSession,
    boards: list[Board],
    args: argparse.Namespace,
    base: str,
    stats: Stats,
    progress: Progress,
) -> None:
    start = time.monotonic()
    reporter = asyncio.create_task(_report(stats, len(boards), start, progress))
    try:
        url = f"{base}/gateway/device-data/ingest"
        await asyncio.gather(
            *(http_board(session, b, url, args, _ticks(args.interval, args.duration, start), stats) for b in boards)
        )
    finally:
        reporter.cancel()
        progress.close()


def check_common(args: argparse.Namespace) -> str:
    """What is wrong with the common arguments ("" when nothing)."""
    if not args.user or not args.password:
        return "gatehouse sim: --user/--password (or GATEHOUSE_SIM_USER/GATEHOUSE_SIM_PASSWORD) required"
    if args.count < 1 or args.interval <= 0 or args.duration <= 0:
        return "gatehouse sim: --count, --interval and --duration must be positive"
    return ""


def endpoints(args: argparse.Namespace, settings: Any, mqtt: bool = True) -> tuple[str, ssl.SSLContext | None]:
    """The REST base URL and the TLS context (None: plain MQTT); fills in `args.mqtt_port`."""
    base = (args.url or f"http://127.0.0.1:{settings.http.port}").rstrip("/")
    if args.mqtt_port is None:
        args.mqtt_port = settings.broker.mqtts_port if args.tls else settings.broker.mqtt_port
    ssl_ctx = None
    if args.tls and mqtt:
        ssl_ctx = ssl.create_default_context(cafile=str(args.cafile or Path(settings.certs_dir) / "ca.crt"))
    return base, ssl_ctx


async def run(args: argparse.Namespace, settings: Any) -> int:
    problem = check_common(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    base, ssl_ctx = endpoints(args, settings, mqtt=args.transport == "mqtt")

    stats = Stats()
    progress = Progress("esp32")
    timeout = aiohttp.ClientTimeout(total=ACK_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=CONNECT_BATCH)) as session:
        try:
            boards = await setup_boards(session, args, base)
        except (SetupError, aiohttp.ClientError, TimeoutError) as exc:
            print(f"gatehouse sim: setup failed: {exc}", file=sys.stderr)
            return 1
        print(
            f"{len(boards)} boards claimed; publishing over {args.transport}{' (tls)' if ssl_ctx else ''}",
            file=sys.stderr,
        )

        try:
            if args.transport == "mqtt":
                await publish_over_mqtt(boards, args, ssl_ctx, stats, progress)
            else:
                await _publish_over_http(session, boards, args, base, stats, progress)
        except (OSError, MqttError, TimeoutError) as exc:
            print(f"\ngatehouse sim: {exc!r}", file=sys.stderr)
            return 1

    lost = stats.sent - stats.acked - (stats.rejected if args.transport == "http" else 0)
    print(
        f"summary: devices={len(boards)} transport={args.transport}{'+tls' if ssl_ctx else ''} "
        f"sent={stats.sent} acknowledged={stats.acked} rejected={stats.rejected} lost={lost} "
        f"reconnects={stats.reconnects} latency_p50_ms={stats.p50:.1f} latency_p99_ms={stats.p99:.1f}"
    )
    return 0 if stats.rejected == 0 and lost == 0 else 1
