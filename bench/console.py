"""What the web console's live updates cost: S open GET /console/events streams over N devices.

python -m bench.console [--streams 100] [--devices 100] [--samples 20] [--db sqlite|postgres]

Starts a server in a fresh data directory (bench.ingest.ServerProcess), makes N claimed devices and
opens S streams as the bench's gooee user (who sees every device, so each stream follows all N). It
measures the server's CPU over 10 s with no stream open, then over 10 s with the S streams open and
nothing changing (the cost of the once-a-second look at the database), then ingests one sample every
0.25 s for a random device over HTTP and times, for every stream, the wait from the ingest's answer
to that stream's `device` event carrying the sample. One line on stdout:

RESULT scenario=console db=<db> streams=<S> devices=<N> status=ok|failed cpu_idle_pct=<no streams>
       cpu_streams_pct=<S streams, quiet> p50_ms=<event delay> p99_ms=<...> events=<n> target_met=yes|no

Target: a sample reaches every open page within 2 s (p99), and 100 open pages cost under 25% of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.ingest import ServerProcess, login, raise_nofile_limit, setup_devices
from firmware_sim.stats import Stats
from tests.pg import Cluster

WINDOW_S = 10.0
SAMPLE_EVERY_S = 0.25


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Watcher:
    """One open stream: when it saw each sample (by its value)."""

    def __init__(self) -> None:
        self.devices: set[int] = set()
        self.seen: dict[int, float] = {}

    async def run(self, http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> None:
        async with http.get(f"{base}/console/events", headers=auth, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            resp.raise_for_status()
            name = ""
            async for raw in resp.content:
                line = raw.decode()
                if line.startswith("event: "):
                    name = line[7:].strip()
                elif line.startswith("data: ") and name == "device":
                    data = json.loads(line[6:])
                    self.devices.add(data["id"])
                    mark = (data.get("last_payload") or {}).get("mark")
                    if mark is not None:
                        self.seen.setdefault(mark, time.monotonic())


async def cpu_over(proc: psutil.Process, seconds: float) -> float:
    proc.cpu_percent(None)
    await asyncio.sleep(seconds)
    return proc.cpu_percent(None)


async def run(server: ServerProcess, args: argparse.Namespace, out: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{server.ports['http']}"
    say(f"setting up {args.devices} devices")
    devices = await setup_devices(base, args.devices)
    proc = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
    out["cpu_idle_pct"] = await cpu_over(proc, WINDOW_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        auth = await login(http, base)
        watchers = [Watcher() for _ in range(args.streams)]
        tasks = [asyncio.create_task(w.run(http, base, auth)) for w in watchers]
        try:
            deadline = time.monotonic() + 60
            while sum(len(w.devices) >= args.devices for w in watchers) < args.streams:
                if time.monotonic() > deadline or any(t.done() for t in tasks):
                    raise RuntimeError("the streams did not all start")
                await asyncio.sleep(0.1)
            say(f"{args.streams} streams open, each following {args.devices} devices; measuring quiet CPU")
            out["cpu_streams_pct"] = await cpu_over(proc, WINDOW_S)
            sent: dict[int, float] = {}
            # One device per sample: a page shows each device's newest state, not every sample.
            for mark, device in enumerate(random.sample(devices, min(args.samples, len(devices)))):
                headers = {"Authorization": f"Bearer {device.api_key}"}
                body = {"mark": mark, "v": random.random()}
                async with http.post(f"{base}/gateway/device-data/ingest", json=body, headers=headers) as resp:
                    resp.raise_for_status()
                sent[mark] = time.monotonic()
                await asyncio.sleep(SAMPLE_EVERY_S)
            await asyncio.sleep(3)
            stats = Stats()
            missing = 0
            for w in watchers:
                for mark, at in sent.items():
                    if mark in w.seen:
                        stats.record_latency(max(0.0, w.seen[mark] - at))
                    else:
                        missing += 1
            out.update(p50_ms=stats.p50, p99_ms=stats.percentile(99), events=len(stats.latencies_ms), missing=missing)
            out["status"] = "ok" if missing == 0 else "failed"
            if missing:
                out["reason"] = f"{missing} sample events never arrived"
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "failed", "cpu_idle_pct": 0.0, "cpu_streams_pct": 0.0, "p50_ms": 0.0,
                           "p99_ms": 0.0, "events": 0}  # fmt: skip
    cluster: Cluster | None = None
    with tempfile.TemporaryDirectory(prefix="gatehouse-console-") as tmp:
        server: ServerProcess | None = None
        try:
            env = {}
            if args.db == "postgres":
                cluster = Cluster().start()
                env["GATEHOUSE_DATABASE__URL"] = cluster.create_database("bench")
            server = ServerProcess(Path(tmp), env)
            await asyncio.to_thread(server.start)
            await run(server, args, out)
        except Exception as exc:
            out["status"], out["reason"] = "failed", f"{type(exc).__name__}:{str(exc)[:120]}"
            say(f"FAILED: {exc!r}")
        finally:
            if server is not None:
                server.stop()
                problems = [line for line in server.tail(10**7).splitlines() if "Traceback" in line]
                say(f"server log: {len(problems)} Traceback lines")
            if cluster is not None:
                cluster.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=100, help="open console pages")
    ap.add_argument("--devices", type=int, default=100, help="devices each stream follows")
    ap.add_argument("--samples", type=int, default=20, help="samples ingested while the streams are open")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = ap.parse_args()
    raise_nofile_limit()
    out = asyncio.run(main_async(args))
    met = out["status"] == "ok" and out["p99_ms"] < 2000 and out["cpu_streams_pct"] - out["cpu_idle_pct"] < 25
    line = (
        f"RESULT scenario=console db={args.db} streams={args.streams} devices={args.devices} status={out['status']} "
        f"cpu_idle_pct={out['cpu_idle_pct']:.1f} cpu_streams_pct={out['cpu_streams_pct']:.1f} "
        f"p50_ms={out['p50_ms']:.0f} p99_ms={out['p99_ms']:.0f} events={out['events']} "
        f"target_met={'yes' if met else 'no'}"
    )
    if "reason" in out:
        line += " reason=" + out["reason"].replace(" ", "_")
    print(line, flush=True)
    sys.exit(0 if out["status"] == "ok" else 1)


if __name__ == "__main__":
    main()
