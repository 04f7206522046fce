"""Gateway Lite CSV import against a real `gatehouse serve`, with MQTT telemetry flowing meanwhile.

python -m bench.gateway_lite_import [--rows 100000] [--db sqlite|postgres] [--time-limit 300]

Starts a server in a fresh data directory (bench.ingest.ServerProcess; `--db postgres` also starts a
throw-away PostgreSQL cluster, tests/pg.py), logs in as the bench's gooee user, creates a product and
uploads an N-row `;`-delimited CSV to POST /integrations/gateway_lite/import. The time runs from the
start of the upload until GET /integrations/gateway_lite/import/<id> says "completed" (polled every
0.25 s; processed_rows/total_rows goes to stderr once a second). Meanwhile one claimed device
publishes QoS 1 telemetry every 20 ms (open loop); the publish->PUBACK latency of the publishes
started during the import gives mqtt_p99_ms. One line on stdout:

RESULT scenario=gateway_lite_import db=<db> rows=<N> status=ok|failed|timeout seconds=<s> rows_per_s=<r>
       mqtt_p99_ms=<p99> mqtt_samples=<n> target_60s=yes|no [reason=<why>]   (one line)

Target: 100,000 rows imported in under 60 s on SQLite (target_60s: this run finished in under 60 s),
with MQTT kept responsive meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.ingest import ServerProcess, login, raise_nofile_limit, setup_devices
from firmware_sim.mqtt import MqttClient
from firmware_sim.stats import Stats
from handlers.gateway_lite_import import HEADER_TEXT as HEADER
from tests.pg import Cluster

PUBLISH_EVERY_S = 0.02
POLL_S = 0.25


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_csv(rows: int) -> bytes:
    lines = [HEADER] + [f"03{i:014d};FW-1.2.3;nabto-{i};{secrets.token_hex(16)}" for i in range(rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


class Telemetry:
    """One device publishing {"v": i} at QoS 1 every 20 ms; latencies only while `recording`."""

    def __init__(self, client: MqttClient, username: str) -> None:
        self.client, self.topic = client, f"devices/{username}/telemetry"
        self.stats, self.idle, self.recording, self.errors = Stats(), Stats(), False, 0
        self.pending: set[asyncio.Task[None]] = set()

    async def _one(self, i: int, record: bool) -> None:
        start = time.perf_counter()
        try:
            await self.client.publish(self.topic, json.dumps({"v": i}).encode(), qos=1)
        except Exception:
            self.errors += 1
            return
        (self.stats if record else self.idle).record_latency(time.perf_counter() - start)

    async def run(self) -> None:
        t0 = time.perf_counter()
        for i in range(sys.maxsize):
            task = asyncio.create_task(self._one(i, self.recording))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * PUBLISH_EVERY_S - time.perf_counter()))


async def wait_import(http: aiohttp.ClientSession, url: str, auth: dict[str, str], limit: float, t0: float) -> str:
    """Poll the import until it is completed or failed; returns ok, failed or timeout."""
    last_print = 0.0
    while True:
        async with http.get(url, headers=auth) as resp:
            body = await resp.json()
        now = time.perf_counter()
        if now - last_print >= 1.0 or body["status"] in ("completed", "failed"):
            last_print = now
            say(f"[import] {now - t0:6.1f} s  {body['status']}  processed_rows {body['processed_rows']}/"
                f"{body['total_rows']}")  # fmt: skip
        if body["status"] == "completed":
            return "ok"
        if body["status"] == "failed":
            say(f"[import] failed: {body['error_message'][:200]}")
            return "failed"
        if now - t0 > limit:
            return "timeout"
        await asyncio.sleep(POLL_S)


async def run(server: ServerProcess, args: argparse.Namespace, out: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{server.ports['http']}"
    (device,) = await setup_devices(base, 1)
    client = MqttClient()
    await client.connect("127.0.0.1", server.ports["mqtt"], client_id=f"{device.username}-bench",
                         username=device.username, password=device.api_key)  # fmt: skip
    telemetry = Telemetry(client, device.username)
    publisher = asyncio.create_task(telemetry.run())
    try:
        async with aiohttp.ClientSession() as http:
            auth = await login(http, base)
            async with http.post(f"{base}/products/", json={"name": "bench"}, headers=auth) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"POST /products/: HTTP {resp.status} {body}")
            product_id = body["id"]
            data = make_csv(args.rows)
            say(f"[import] {args.rows} rows, {len(data) / 2**20:.1f} MiB; uploading")
            form = aiohttp.FormData()
            form.add_field("csv_file", data, filename="gateways.csv", content_type="text/csv")
            form.add_field("product_id", product_id)
            telemetry.recording = True
            t0 = time.perf_counter()
            try:
                async with http.post(f"{base}/integrations/gateway_lite/import", data=form, headers=auth) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status != 201 or "id" not in body:
                        raise RuntimeError(f"upload: HTTP {resp.status} {str(body)[:200]}")
                say(f"[import] upload answered in {time.perf_counter() - t0:.2f} s: id {body['id']}")
                url = f"{base}/integrations/gateway_lite/import/{body['id']}"
                out["status"] = await wait_import(http, url, auth, args.time_limit, t0)
            finally:
                out["seconds"] = time.perf_counter() - t0
                telemetry.recording = False
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        if telemetry.pending:
            await asyncio.wait(telemetry.pending, timeout=5)
        idle, busy = telemetry.idle, telemetry.stats
        say(f"[mqtt] during the import: p50 {busy.p50:.2f} ms, max {max(busy.latencies_ms, default=0):.2f} ms")
        say(f"[mqtt] outside the import: p99 {idle.percentile(99):.2f} ms ({len(idle.latencies_ms)} samples)")
        out["mqtt_p99_ms"], out["mqtt_samples"] = telemetry.stats.percentile(99), len(telemetry.stats.latencies_ms)
        if telemetry.errors:
            say(f"[mqtt] {telemetry.errors} publishes failed")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 5)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "failed", "seconds": 0.0, "mqtt_p99_ms": 0.0, "mqtt_samples": 0}
    cluster: Cluster | None = None
    with tempfile.TemporaryDirectory(prefix="gatehouse-gwl-import-") as tmp:
        server: ServerProcess | None = None
        try:
            env = {}
            if args.db == "postgres":
                cluster = Cluster().start()
                say(f"PostgreSQL cluster on port {cluster.port} in {cluster.root}")
                env["GATEHOUSE_DATABASE__URL"] = cluster.create_database("bench")
            server = ServerProcess(Path(tmp), env)
            say(f"starting gatehouse serve in {tmp}")
            await asyncio.to_thread(server.start)
            await run(server, args, out)
        except Exception as exc:
            out["status"], out["reason"] = "failed", f"{type(exc).__name__}:{str(exc)[:120]}"
            say(f"FAILED: {exc!r}")
        finally:
            if server is not None:
                server.stop()
                log = server.tail(10**7)
                problems = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line]
                say(f"server log: {len(problems)} ERROR/Traceback lines" + "".join(f"\n  {p}" for p in problems[:10]))
                if out["status"] != "ok":
                    say(f"server log tail:\n{server.tail()}")
            if cluster is not None:
                cluster.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="gateways in the CSV file")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite", help="the server's database")
    ap.add_argument("--time-limit", type=float, default=300, help="seconds before status=timeout")
    args = ap.parse_args()
    raise_nofile_limit()
    out = asyncio.run(main_async(args))
    seconds = out["seconds"]
    rate = args.rows / seconds if out["status"] == "ok" and seconds > 0 else 0.0
    line = (
        f"RESULT scenario=gateway_lite_import db={args.db} rows={args.rows} status={out['status']} "
        f"seconds={seconds:.2f} rows_per_s={rate:.0f} mqtt_p99_ms={out['mqtt_p99_ms']:.2f} "
        f"mqtt_samples={out['mqtt_samples']} target_60s={'yes' if out['status'] == 'ok' and seconds < 60 else 'no'}"
    )
    if "reason" in out:
        line += " reason=" + out["reason"].replace(" ", "_").replace("\n", "_")
    print(line, flush=True)
    sys.exit(0 if out["status"] == "ok" else 1)


if __name__ == "__main__":
    main()
