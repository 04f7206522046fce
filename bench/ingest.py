"""End-to-end ingest: QoS 1 telemetry persisted by a real `gatehouse serve`, against bare amqtt.

python -m bench.ingest [--db sqlite|postgres] [--devices 100] [--messages 50] [--window 10]

A PUBACK from Gatehouse means the sample is committed, so acknowledged/s is persisted/s; the
row count in the database afterwards checks that. `--db postgres` starts a throw-away
PostgreSQL cluster of its own (tests/pg.py, stock durability settings) and points the server at
it. Then bench.baseline runs bare amqtt forwarding the same load to one subscriber, and the last
line compares the two:
RESULT db=<backend> persisted_mps=<n> baseline_mps=<n> ratio=<r> lost=<n> p99_ms=<n> rss_mb=<n>
       mean_batch=<samples> commit_ms=<n>   (one line; the writer's figures from /health)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import asyncpg
import psutil

from bench.baseline import run_baseline
from firmware_sim.mqtt import MqttClient
from firmware_sim.stats import Progress, Stats
from tests.pg import Cluster

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bench@example.com", "Bench-Passw0rd!"
CONNECT_BATCH = 50
SETUP_CONCURRENCY = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gatehouse(*args: str) -> list[str]:
    return [sys.executable, "-m", "gatehouse.cli", *args]


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to the hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup() -> None:  # runs in the forked server before exec
    raise_nofile_limit()


class ServerProcess:
    """`gatehouse serve` on free loopback ports with a fresh data directory."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, **(env or {})}  # GATEHOUSE_* overrides for the server
        self.ports = {flag: _free_port() for flag in ("http", "https", "mqtt", "mqtts", "ws")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"

    def start(self, timeout: float = 30) -> None:
        done = subprocess.run(
            _gatehouse(
                "users",
                "create",
                "--username",
                USER,
                "--account-type",
                "gooee",
                "--password-stdin",
                "--data-dir",
                str(self.data_dir),
            ),
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=self.env,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"users create failed: {done.stderr}")
        ports = [a for flag, port in self.ports.items() for a in (f"--{flag}-port", str(port))]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*_gatehouse("serve", "--data-dir", str(self.data_dir)), *ports],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
                preexec_fn=_child_setup,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gatehouse serve exited {self.proc.returncode}:\n{self.tail()}")
            try:
                for key in ("http", "mqtt"):
                    socket.create_connection(("127.0.0.1", self.ports[key]), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gatehouse serve did not come up:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class Device(NamedTuple):
    id: int  # REST id
    username: str  # MQTT username (the topic level under devices/)
    api_key: str  # MQTT password


async def login(http: aiohttp.ClientSession, base: str) -> dict[str, str]:
    """Log the bench user in once (argon2: ~170 ms a login); returns the Authorization header."""
    async with http.post(f"{base}/auth/login", json={"username": USER, "password": PASSWORD}) as resp:
        resp.raise_for_status()
        return {"Authorization": f"Bearer {(await resp.json())['access_token']}"}


async def setup_devices(
    base: str,
    count: int,
    *,
    concurrency: int = SETUP_CONCURRENCY,
    on_progress: Callable[[int], None] | None = None,
) -> list[Device]:
    """Create, provision and claim `count` devices over REST, `concurrency` devices at a time."""
    done = 0
    async with aiohttp.ClientSession(raise_for_status=True, connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        auth = await login(http, base)
        limit = asyncio.Semaphore(concurrency)

        async def one(i: int) -> Device:
            nonlocal done
            async with limit:
                body = {"name": f"bench-{i}", "location": "bench"}
                async with http.post(f"{base}/gateway/devices", json=body, headers=auth) as resp:
                    device = await resp.json()
                async with http.post(f"{base}/gateway/devices/{device['id']}/provision", json={}, headers=auth) as r:
                    token = (await r.json())["token"]
                claim = {"token": token, "device_metadata": {"fw": "bench"}}
                async with http.post(f"{base}/gateway/devices/claim", json=claim) as resp:
                    claimed = await resp.json()
            done += 1
            if on_progress is not None:
                on_progress(done)
            return Device(device["id"], claimed["mqtt"]["username"], claimed["api_key"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def claim_devices(base: str, count: int) -> list[tuple[str, str]]:
    """Create and claim `count` devices over REST; returns (mqtt username, api key) pairs."""
    return [(d.username, d.api_key) for d in await setup_devices(base, count)]


async def publish_telemetry(client: MqttClient, username: str, count: int, window: int, stats: Stats) -> float:
    """Publish `count` QoS 1 samples with at most `window` in flight; returns the last PUBACK time."""
    topic = f"devices/{username}/telemetry"
    seqs = iter(range(count))
    last = 0.0

    async def worker() -> None:
        nonlocal last
        for seq in seqs:  # shared iterator: `window` workers = `window` messages in flight
            reading = {"seq": seq, "voltage": round(random.gauss(230, 1.5), 1), "current": 4.2, "kwh": 100 + seq}
            stats.sent += 1
            start = time.perf_counter()
            await client.publish(topic, json.dumps(reading).encode(), qos=1)
            last = time.perf_counter()
            stats.record_latency(last - start)
            stats.acked += 1

    await asyncio.gather(*(worker() for _ in range(min(window, count))))
    return last


async def sample_rss(proc: psutil.Process, peak: list[int]) -> None:
    while True:
        with contextlib.suppress(psutil.Error):
            rss = proc.memory_info().rss
            peak[:] = [max(p, rss) for p in peak]  # [whole run, since the last reset]
        await asyncio.sleep(0.1)


def count_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]


async def writer_stats(base: str) -> dict[str, Any]:
    """The server's telemetry writer counters (mean batch size, mean commit time) from /health."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/health") as resp:
        return (await resp.json())["database"]


async def count_rows_postgres(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT COUNT(*) FROM telemetry")
    finally:
        await conn.close()


async def run_ingest(
    devices: int, messages: int, window: int, data_dir: Path, database_url: str | None = None
) -> dict[str, Any]:
    server = ServerProcess(data_dir, {"GATEHOUSE_DATABASE__URL": database_url} if database_url else None)
    clients: list[MqttClient] = []
    try:
        print(f"starting gatehouse serve in {data_dir}", file=sys.stderr)
        server.start()
        assert server.proc is not None
        server_ps, me = psutil.Process(server.proc.pid), psutil.Process(os.getpid())
        peak = [0, 0]
        sampler = asyncio.create_task(sample_rss(server_ps, peak))

        creds = await claim_devices(f"http://127.0.0.1:{server.ports['http']}", devices)
        print(f"{devices} devices claimed; connecting", file=sys.stderr)
        clients = [MqttClient() for _ in creds]
        for lo in range(0, devices, CONNECT_BATCH):
            await asyncio.gather(
                *(
                    c.connect("127.0.0.1", server.ports["mqtt"], client_id=f"{u}-bench", username=u, password=k)
                    for c, (u, k) in zip(clients[lo : lo + CONNECT_BATCH], creds[lo : lo + CONNECT_BATCH], strict=True)
                )
            )

        stats, total = Stats(), devices * messages
        progress = Progress("ingest")
        cpu0 = (server_ps.cpu_times(), me.cpu_times())
        peak[1] = 0
        t0 = time.perf_counter()
        publishing = asyncio.gather(
            *(publish_telemetry(c, u, messages, window, stats) for c, (u, _) in zip(clients, creds, strict=True))
        )
        while not publishing.done():
            await asyncio.wait([publishing], timeout=0.25)
            rate = stats.acked / max(time.perf_counter() - t0, 1e-9)
            progress.update(f"persisted {stats.acked}/{total} ({rate:,.0f} msg/s)")
        seconds = max(publishing.result()) - t0
        cpu1 = (server_ps.cpu_times(), me.cpu_times())
        mps = stats.acked / seconds if seconds > 0 else 0.0
        progress.close(f"persisted {stats.acked}/{total} in {seconds:.2f}s = {mps:,.0f} msg/s; {stats.summary()}")

        writer = await writer_stats(f"http://127.0.0.1:{server.ports['http']}")
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
        clients = []
        rows = await count_rows_postgres(database_url) if database_url else count_rows(data_dir / "gatehouse.db")
        sampler.cancel()
        cpu = [sum(cpu1[i][:2]) - sum(cpu0[i][:2]) for i in (0, 1)]
        return {
            "persisted_mps": round(mps, 1),
            "seconds": round(seconds, 3),
            "sent": stats.sent,
            "acked": stats.acked,
            "rows": rows,
            "lost": stats.sent - rows,
            "p50_ms": round(stats.p50, 2),
            "p99_ms": round(stats.p99, 2),
            "rss_mb": round(peak[0] / 2**20, 1),
            "rss_publish_mb": round(peak[1] / 2**20, 1),
            "server_cpu_pct": round(100 * cpu[0] / seconds, 1) if seconds > 0 else 0.0,
            "generator_cpu_pct": round(100 * cpu[1] / seconds, 1) if seconds > 0 else 0.0,
            "mean_batch": writer.get("telemetry_mean_batch", 0),
            "commit_ms": writer.get("telemetry_mean_commit_ms", 0),
        }
    except BaseException:
        print(f"\nserver log tail:\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True), 5)
        server.stop()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as tmp:
        if args.db == "postgres":
            cluster = Cluster().start()
            print(f"PostgreSQL cluster on port {cluster.port} in {cluster.root}", file=sys.stderr)
            try:
                url = cluster.create_database("bench")
                ingest = await run_ingest(args.devices, args.messages, args.window, Path(tmp), url)
            finally:
                cluster.stop()
        else:
            ingest = await run_ingest(args.devices, args.messages, args.window, Path(tmp))
    print("running bare amqtt baseline", file=sys.stderr)
    baseline = await run_baseline(args.devices, args.messages)
    return {"ingest": ingest, "baseline": baseline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite", help="the server's database")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--messages", type=int, default=50, help="QoS 1 messages per device")
    ap.add_argument("--window", type=int, default=10, help="in-flight QoS 1 messages per device")
    args = ap.parse_args()
    raise_nofile_limit()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
    else:
        result = uvloop.run(main_async(args))
    ing, base = result["ingest"], result["baseline"]
    ratio = ing["persisted_mps"] / base["baseline_mps"] if base["baseline_mps"] else 0.0
    load = f"{args.devices} devices x {args.messages} QoS 1 messages, window {args.window}"
    print(f"\nGatehouse ingest on {args.db}, {load}")
    print(f"  persisted        {ing['persisted_mps']:>10,.0f} msg/s  ({ing['acked']} acked in {ing['seconds']} s)")
    print(f"  rows / sent      {ing['rows']:>10} / {ing['sent']}  (lost {ing['lost']})")
    print(f"  publish->commit  p50 {ing['p50_ms']} ms, p99 {ing['p99_ms']} ms")
    print(f"  writer           mean batch {ing['mean_batch']} samples, mean commit {ing['commit_ms']} ms")
    print(f"  server           peak RSS {ing['rss_mb']} MB ({ing['rss_publish_mb']} MB while publishing)")
    print(f"                   CPU {ing['server_cpu_pct']}% (of one core)")
    print(f"  generator        CPU {ing['generator_cpu_pct']}%")
    print("Bare amqtt forwarding baseline (same load, one QoS 1 subscriber)")
    print(f"  forwarded        {base['baseline_mps']:>10,.0f} msg/s  (lost {base['lost']})")
    print(f"  PUBACK latency   p50 {base['puback_p50_ms']} ms, p99 {base['puback_p99_ms']} ms")
    print(f"  broker CPU {base['broker_cpu_pct']}%, generator CPU {base['generator_cpu_pct']}%")
    print(f"  ratio persisted/baseline {ratio:.2f}")
    print(
        f"RESULT db={args.db} persisted_mps={ing['persisted_mps']:.0f} baseline_mps={base['baseline_mps']:.0f} "
        f"ratio={ratio:.2f} lost={ing['lost']} p99_ms={ing['p99_ms']:.1f} rss_mb={ing['rss_mb']:.0f} "
        f"mean_batch={ing['mean_batch']} commit_ms={ing['commit_ms']}"
    )


if __name__ == "__main__":
    main()
