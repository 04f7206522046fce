"""Fleet load tests against a real `gatehouse serve`, with bare amqtt and Mosquitto as references.

python -m bench.fleet [--scenario fleet|fleet10k|commands|baseline|all] [--devices N] [--messages M]

Scenarios (each prints one `RESULT scenario=<name> status=ok|timeout|stalled|failed|skipped ...`
line on stdout; progress goes to stderr):

fleet     1,000 devices created and claimed over REST, connected (ramped) and each subscribed at
          QoS 1 to its own devices/<u>/commands/req/+; each publishes M QoS 1 telemetry samples
          with at most --window in flight. A Gatehouse PUBACK means "committed", so
          acked/elapsed is persisted msg/s; lost = sent - rows in the telemetry table.
          Targets: >= 5,000 msg/s, lost 0.
fleet10k  The same with 10,000 devices (--devices-10k). Also: connect storm (all CONNACKed and
          SUBACKed) < 60 s, server peak RSS < 1 GiB, msg/s within 20 % of fleet's.
commands  1,000 connected devices answer every command at once with {"status": "ok"}; the bench
          sends --commands REST commands (timeout 5, --command-concurrency at a time) to random
          devices. Latency = the POST's round trip (published, answered, answer recorded).
          Target: p99 < 50 ms.
baseline  The fleet's publish load (no subscriptions) through bare amqtt and through Mosquitto,
          each forwarding to one QoS 1 subscriber; ratios against Gatehouse's fleet figure (from
          this run when `fleet` ran first, else the fleet scenario is run first).

Each scenario runs in a fresh server and data directory, and is bounded by --time-limit
(fleet10k: --time-limit-10k); progress that stops for --stall seconds aborts it too. Servers are
always stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiohttp
import psutil

from bench._mosquitto import MosquittoUnavailable
from bench.baseline import run_baseline
from bench.ingest import (
    Device,
    ServerProcess,
    count_rows,
    login,
    publish_telemetry,
    raise_nofile_limit,
    setup_devices,
)
from firmware_sim.mqtt import ConnectRefused, MqttClient, MqttError
from firmware_sim.stats import Stats

T = TypeVar("T")

SCENARIOS = ("fleet", "fleet10k", "commands", "baseline")
# Keep the ephemeral port range (32768-60999: ~28k) well clear: past this many clients, spread
# source addresses over 127.0.0.2, 127.0.0.3, ... (each address has its own port space).
CLIENTS_PER_SOURCE_ADDR = 20_000
CONNECT_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 20.0
IDLE_SETTLE_S = 2.0  # quiet seconds before each RSS reading of the idle-connection figure
# The server's access tokens last 15 minutes by default; a long fleet10k setup could outlive one.
SERVER_ENV = {"GATEHOUSE_AUTH__ACCESS_TOKEN_MINUTES": "240"}
ANSWER = b'{"status":"ok"}'
SEQUENTIAL_COMMANDS = 100  # sent one at a time before the concurrent run (alone_p50/p99_ms)
RSS_TARGET = 2**30


class Aborted(Exception):
    """A scenario stopped before the end (stall); `status` goes into the RESULT line."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- output ---------------------------------------------------------------------------------------


class Ticker:
    """Progress on stderr: a `\\r`-rewritten line on a terminal, a new line every few seconds otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.interval = 0.25 if self.tty else 5.0
        self._last = 0.0
        self._width = 0

    def update(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self._emit(text, end="" if self.tty else "\n")

    def close(self, text: str) -> None:
        self._emit(text, end="\n")
        self._last = 0.0
        self._width = 0

    def _emit(self, text: str, end: str) -> None:
        line = f"[{self.label}] {text}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(self._width) + end)
            self._width = 0 if end else len(line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def result_line(scenario: str, values: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v).replace(" ", "_")

    ordered = {"scenario": scenario, "status": values.get("status", "?"), **values}
    return "RESULT " + " ".join(f"{k}={fmt(v)}" for k, v in ordered.items())


# -- measurement helpers --------------------------------------------------------------------------


class Mark(NamedTuple):
    wall: float
    server: float  # CPU seconds (user + system, all threads)
    gen: float
    iowait: float  # host-wide, summed over CPUs
    idle: float
    total: float


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


class Monitor:
    """Samples the server's RSS (peak) and CPU (recent %) while a scenario runs."""

    def __init__(self, pid: int) -> None:
        self.server = psutil.Process(pid)
        self.me = psutil.Process(os.getpid())
        self.peak_rss = 0  # whole run
        self.phase_rss = 0  # since the last reset_phase()
        self.server_cpu_now = 0.0  # % of one core over the last second or so
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        prev_t, prev_cpu = time.perf_counter(), cpu_seconds(self.server)
        while True:
            await asyncio.sleep(0.2)
            with contextlib.suppress(psutil.Error):
                self.sample_rss()
                now, cpu = time.perf_counter(), cpu_seconds(self.server)
                if now - prev_t >= 1.0:
                    self.server_cpu_now = 100 * (cpu - prev_cpu) / (now - prev_t)
                    prev_t, prev_cpu = now, cpu

    def sample_rss(self) -> None:
        rss = self.server.memory_info().rss
        self.peak_rss, self.phase_rss = max(self.peak_rss, rss), max(self.phase_rss, rss)

    def mark(self) -> Mark:
        """CPU counters now; `usage` turns two marks into percentages."""
        with contextlib.suppress(psutil.Error):
            self.sample_rss()
        host = psutil.cpu_times()
        return Mark(
            time.perf_counter(),
            cpu_seconds(self.server),
            cpu_seconds(self.me),
            getattr(host, "iowait", 0.0),
            host.idle,
            sum(host),
        )

    @staticmethod
    def usage(a: Mark, b: Mark) -> dict[str, float]:
        """Server and generator CPU in % of one core; host iowait, idle and other (softirq, other
        processes: busy time neither the server nor the generator was charged for) likewise."""
        wall = max(b.wall - a.wall, 1e-9)
        server, gen = b.server - a.server, b.gen - a.gen
        idle, iowait = b.idle - a.idle, b.iowait - a.iowait
        other = (b.total - a.total) - idle - iowait - server - gen
        return {
            "server_cpu_pct": round(100 * server / wall, 1),
            "gen_cpu_pct": round(100 * gen / wall, 1),
            "host_other_pct": round(100 * max(other, 0.0) / wall, 1),
            "host_iowait_pct": round(100 * iowait / wall, 1),
            "host_idle_pct": round(100 * idle / wall, 1),
        }


async def watch(
    aw: Awaitable[T],
    ticker: Ticker,
    render: Callable[[], str],
    counter: Callable[[], int],
    stall_s: float,
    phase: str,
) -> T:
    """Await `aw` showing progress; abort when `counter` has not moved for `stall_s` seconds."""
    task = asyncio.ensure_future(aw)
    last, changed = counter(), time.monotonic()
    try:
        while not task.done():
            await asyncio.wait([task], timeout=0.25)
            ticker.update(render())
            if (n := counter()) != last:
                last, changed = n, time.monotonic()
            elif time.monotonic() - changed > stall_s:
                ticker.close(render())
                raise Aborted("stalled", f"{phase}: no progress for {stall_s:.0f} s: {render()}")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    ticker.close(render())
    return task.result()


def time_wait_sockets() -> int:
    """TCP sockets in TIME_WAIT on this host (state 06 in /proc/net/tcp*)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as f:
            next(f, None)
            n += sum(1 for line in f if line.split()[3] == "06")
    return n


def source_addresses(clients: int) -> list[str | None]:
    """Source addresses to spread `clients` connections over; [None] = let the kernel choose."""
    if clients <= CLIENTS_PER_SOURCE_ADDR:
        return [None]
    return [f"127.0.0.{2 + i}" for i in range(math.ceil(clients / CLIENTS_PER_SOURCE_ADDR))]


def pct(stats: Stats, p: float) -> float:
    return round(stats.percentile(p), 2)


# -- the Gatehouse fleet --------------------------------------------------------------------------


@dataclass
class Run:
    """What one scenario has measured so far: printed as its RESULT line even when it aborts."""

    scenario: str
    phase: str = "start"
    values: dict[str, Any] = field(default_factory=dict)


class GatehouseFleet:
    """A `gatehouse serve` with `n` claimed devices, each connected and subscribed to its commands."""

    def __init__(self, run: Run, n: int, args: argparse.Namespace) -> None:
        self.run, self.n, self.args = run, n, args
        self.tmp = tempfile.TemporaryDirectory(prefix=f"gatehouse-{run.scenario}-")
        self.data_dir = Path(self.tmp.name)
        self.server = ServerProcess(self.data_dir, env=SERVER_ENV)
        self.devices: list[Device] = []
        self.clients: list[MqttClient] = []
        self.monitor: Monitor | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.ports['http']}"

    async def __aenter__(self) -> GatehouseFleet:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        run, v = self.run, self.run.values
        run.phase = "server"
        say(f"[{run.scenario}] starting gatehouse serve in {self.data_dir}")
        await asyncio.to_thread(self.server.start)
        assert self.server.proc is not None
        self.monitor = Monitor(self.server.proc.pid)
        self.monitor.start()
        v["devices"] = self.n

        run.phase = "setup"
        done = [0]
        t0 = time.perf_counter()

        def render_setup() -> str:
            el = time.perf_counter() - t0
            return f"REST setup {done[0]}/{self.n} devices in {el:.0f} s ({done[0] / max(el, 1e-9):,.0f}/s)"

        def on_progress(k: int) -> None:
            done[0] = k

        self.devices = await watch(
            setup_devices(self.base, self.n, concurrency=self.args.setup_concurrency, on_progress=on_progress),
            Ticker(run.scenario),
            render_setup,
            lambda: done[0],
            self.args.stall,
            "REST setup",
        )
        v["setup_s"] = round(time.perf_counter() - t0, 1)
        before = await self._settled_rss()

        run.phase = "connect"
        await self._connect_all()
        # Memory per idle connection: the server's RSS with every device connected and subscribed,
        # nothing else happening, against its RSS just before the first CONNECT.
        after = await self._settled_rss()
        v["rss_before_connect_mb"], v["rss_connected_mb"] = round(before / 2**20, 1), round(after / 2**20, 1)
        v["idle_bytes_per_conn"] = round((after - before) / max(len(self.clients), 1))

    async def _settled_rss(self) -> int:
        await asyncio.sleep(IDLE_SETTLE_S)
        assert self.server.proc is not None
        return psutil.Process(self.server.proc.pid).memory_info().rss

    async def _connect_all(self) -> None:
        run, v, args = self.run, self.run.values, self.args
        assert self.monitor is not None
        port = self.server.ports["mqtt"]
        addrs = source_addresses(self.n)
        if addrs != [None]:
            say(f"[{run.scenario}] spreading {self.n} clients over source addresses {addrs[0]}..{addrs[-1]}")
        if (tw := time_wait_sockets()) > 1000:
            say(f"[{run.scenario}] note: {tw} sockets in TIME_WAIT on this host (earlier runs)")
        clients: list[MqttClient | None] = [None] * self.n
        counts = {"connected": 0, "subscribed": 0, "retries": 0}
        ramp = asyncio.Semaphore(args.ramp)

        async def one(i: int, dev: Device) -> None:
            addr = addrs[i % len(addrs)]
            async with ramp:
                for attempt in range(1, CONNECT_ATTEMPTS + 1):
                    client = MqttClient()
                    try:
                        await client.connect(
                            "127.0.0.1",
                            port,
                            client_id=f"{dev.username}-bench",  # a device's client ids start with its username
                            username=dev.username,
                            password=dev.api_key,
                            timeout=CONNECT_TIMEOUT_S,
                            local_addr=(addr, 0) if addr else None,
                        )
                        break
                    except ConnectRefused:
                        raise
                    except (OSError, MqttError, TimeoutError) as exc:
                        counts["retries"] += 1
                        if attempt == CONNECT_ATTEMPTS:
                            raise MqttError(f"device {i}: connect failed {attempt} times, last: {exc!r}") from exc
                        await asyncio.sleep(0.5 * attempt)
                clients[i] = client
                counts["connected"] += 1
                rc = await client.subscribe(f"devices/{dev.username}/commands/req/+", qos=1)
                if rc != 1:
                    raise MqttError(f"device {i}: SUBSCRIBE refused or downgraded (SUBACK rc {rc:#x})")
                counts["subscribed"] += 1

        t0 = self.monitor.mark()

        def render() -> str:
            el = time.perf_counter() - t0.wall
            return (
                f"connect storm: {counts['connected']}/{self.n} CONNACKed, {counts['subscribed']} SUBACKed "
                f"in {el:.1f} s, {counts['retries']} retries, server CPU {self.monitor.server_cpu_now:.0f}%"
                if self.monitor
                else ""
            )

        async def storm() -> None:
            try:
                await asyncio.gather(*(one(i, d) for i, d in enumerate(self.devices)))
            finally:
                self.clients = [c for c in clients if c is not None]

        try:
            await watch(
                storm(),
                Ticker(run.scenario),
                render,
                lambda: counts["connected"] + counts["subscribed"],
                args.stall,
                "connect",
            )
        finally:
            t1 = self.monitor.mark()
            v["connected"], v["subscribed"], v["connect_retries"] = (
                counts["connected"],
                counts["subscribed"],
                counts["retries"],
            )
            v["storm_s"] = round(t1.wall - t0.wall, 2)
            v.update({f"storm_{k}": x for k, x in Monitor.usage(t0, t1).items() if "host" not in k})

    async def close(self) -> None:
        clients, self.clients = self.clients, []
        if clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True), 15)
        if self.monitor is not None:
            await self.monitor.stop()
            self.run.values["rss_mb"] = round(self.monitor.peak_rss / 2**20, 1)
        await asyncio.to_thread(self.server.stop)
        if clients:  # the server is gone: every client's read loop ends and closes its socket
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients), return_exceptions=True), 10)
        self.tmp.cleanup()


# -- scenarios ------------------------------------------------------------------------------------


async def scenario_fleet(run: Run, n: int, args: argparse.Namespace) -> None:
    v = run.values
    async with GatehouseFleet(run, n, args) as fleet:
        assert fleet.monitor is not None
        mon = fleet.monitor
        run.phase = "publish"
        stats, total = Stats(), n * args.messages
        dropped: list[str] = []
        mon.phase_rss = 0

        async def device(client: MqttClient, dev: Device) -> float:
            try:
                return await publish_telemetry(client, dev.username, args.messages, args.window, stats)
            except (OSError, MqttError) as exc:
                dropped.append(f"{dev.username}: {exc!r}")
                return 0.0

        def render() -> str:
            el = time.perf_counter() - t0.wall
            return (
                f"publish: {stats.acked:,}/{total:,} acked in {el:.1f} s ({stats.acked / max(el, 1e-9):,.0f} msg/s), "
                f"server CPU {mon.server_cpu_now:.0f}%, peak RSS {mon.peak_rss / 2**20:,.0f} MB"
            )

        v["messages"], v["window"] = args.messages, args.window
        t0 = mon.mark()
        try:
            lasts = await watch(
                asyncio.gather(*(device(c, d) for c, d in zip(fleet.clients, fleet.devices, strict=True))),
                Ticker(run.scenario),
                render,
                lambda: stats.acked,
                args.stall,
                "publish",
            )
        finally:
            t1 = mon.mark()
        seconds = max(lasts) - t0.wall if max(lasts) > 0 else t1.wall - t0.wall
        mps = stats.acked / seconds if seconds > 0 else 0.0
        run.phase = "count"
        rows = await asyncio.to_thread(count_rows, fleet.data_dir / "gatehouse.db")
        v.update(
            status="ok",
            mps=round(mps, 1),
            seconds=round(seconds, 2),
            sent=stats.sent,
            acked=stats.acked,
            rows=rows,
            lost=stats.sent - rows,
            dropped_clients=len(dropped),
            p50_ms=pct(stats, 50),
            p99_ms=pct(stats, 99),
            **Monitor.usage(t0, t1),
            rss_publish_mb=round(mon.phase_rss / 2**20, 1),
        )
        for line in dropped[:5]:
            say(f"[{run.scenario}] dropped: {line}")


async def scenario_commands(run: Run, n: int, args: argparse.Namespace) -> None:
    v = run.values
    async with GatehouseFleet(run, n, args) as fleet:
        assert fleet.monitor is not None
        mon = fleet.monitor
        answers: set[asyncio.Task[None]] = set()
        answer_errors = [0]

        def answered(task: asyncio.Task[None]) -> None:
            answers.discard(task)
            if not task.cancelled() and task.exception() is not None:
                answer_errors[0] += 1

        async def responder(client: MqttClient, dev: Device) -> None:
            prefix = f"devices/{dev.username}/commands/req/"
            res = f"devices/{dev.username}/commands/res/"
            while True:
                topic, _payload = await client.messages.get()
                if topic.startswith(prefix):
                    task = asyncio.create_task(client.publish(res + topic[len(prefix) :], ANSWER, qos=1))
                    answers.add(task)
                    task.add_done_callback(answered)

        responders = [asyncio.create_task(responder(c, d)) for c, d in zip(fleet.clients, fleet.devices, strict=True)]
        run.phase = "commands"
        total, conc = args.commands, args.command_concurrency
        stats = Stats()
        outcome = {"ok": 0, "pending": 0, "error": 0}
        errors: list[str] = []
        rng = random.Random(1)
        targets = [rng.choice(fleet.devices) for _ in range(total)]
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(conc, 200))) as http:
                auth = await login(http, fleet.base)
                queue = iter(enumerate(targets))

                async def command(i: int, dev: Device) -> tuple[int, Any, float]:
                    body = {"command": {"method": "ping", "seq": i}, "timeout": 5}
                    start = time.perf_counter()
                    async with http.post(
                        f"{fleet.base}/gateway/devices/{dev.id}/commands", json=body, headers=auth
                    ) as resp:
                        data = await resp.json(content_type=None)
                    return resp.status, data, time.perf_counter() - start

                # One at a time first: the latency of a command alone, without queueing behind others.
                alone = Stats()
                for i in range(min(SEQUENTIAL_COMMANDS, total)):
                    status, _, seconds = await command(-1 - i, rng.choice(fleet.devices))
                    if status == 200:
                        alone.record_latency(seconds)
                v["alone_p50_ms"], v["alone_p99_ms"] = pct(alone, 50), pct(alone, 99)
                say(f"[{run.scenario}] alone (concurrency 1): p50 {pct(alone, 50)} ms, p99 {pct(alone, 99)} ms")

                # Open loop: commands arrive at a fixed rate, as users' REST calls would, whatever
                # the server's latency (closed-loop workers below measure it at saturation instead).
                rated = Stats()
                rated_bad = [0]

                async def timed(i: int, dev: Device) -> None:
                    status, data, seconds = await command(i, dev)
                    if status == 200 and isinstance(data, dict) and data.get("status") == "ok":
                        rated.record_latency(seconds)
                    else:
                        rated_bad[0] += 1

                count = int(args.command_rate * args.rate_seconds)
                say(f"[{run.scenario}] open loop: {count} commands at {args.command_rate:g}/s")
                pending: list[asyncio.Task[None]] = []
                start = time.perf_counter()
                for i in range(count):
                    delay = start + i / args.command_rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    pending.append(asyncio.create_task(timed(-100_000 - i, rng.choice(fleet.devices))))
                await asyncio.gather(*pending)
                v["rate_per_s"] = args.command_rate
                v["rate_p50_ms"], v["rate_p99_ms"] = pct(rated, 50), pct(rated, 99)
                v["rate_failed"] = rated_bad[0]
                say(
                    f"[{run.scenario}] open loop at {args.command_rate:g}/s: p50 {pct(rated, 50)} ms, "
                    f"p99 {pct(rated, 99)} ms, failed {rated_bad[0]}"
                )

                async def worker() -> None:
                    for i, dev in queue:
                        status, data, seconds = await command(i, dev)
                        stats.record_latency(seconds)
                        stats.sent += 1
                        if status == 200 and isinstance(data, dict) and data.get("status") == "ok":
                            outcome["ok"] += 1
                        elif status == 202:
                            outcome["pending"] += 1
                        else:
                            outcome["error"] += 1
                            if len(errors) < 5:
                                errors.append(f"HTTP {status}: {json.dumps(data)[:200]}")

                def render() -> str:
                    el = time.perf_counter() - t0.wall
                    return (
                        f"commands: {stats.sent}/{total} in {el:.1f} s ({stats.sent / max(el, 1e-9):,.0f}/s), "
                        f"ok {outcome['ok']}, pending {outcome['pending']}, error {outcome['error']}, "
                        f"server CPU {mon.server_cpu_now:.0f}%"
                    )

                t0 = mon.mark()
                try:
                    await watch(
                        asyncio.gather(*(worker() for _ in range(conc))),
                        Ticker(run.scenario),
                        render,
                        lambda: stats.sent,
                        args.stall,
                        "commands",
                    )
                finally:
                    t1 = mon.mark()
        finally:
            for r in responders:
                r.cancel()
            await asyncio.gather(*responders, return_exceptions=True)
        seconds = t1.wall - t0.wall
        v.update(
            status="ok",
            commands=stats.sent,
            concurrency=conc,
            ok=outcome["ok"],
            pending=outcome["pending"],
            errors=outcome["error"],
            answer_errors=answer_errors[0],
            per_s=round(stats.sent / seconds, 1) if seconds > 0 else 0.0,
            p50_ms=pct(stats, 50),
            p99_ms=pct(stats, 99),
            max_ms=round(max(stats.latencies_ms, default=0.0), 2),
            **Monitor.usage(t0, t1),
        )
        for line in errors:
            say(f"[{run.scenario}] error: {line}")


async def reference_broker(broker: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    say(f"[baseline] {broker}: {n} publishers x {args.messages} QoS 1 messages, window {args.window}")
    try:
        async with asyncio.timeout(args.time_limit):
            return await run_baseline(n, args.messages, window=args.window, broker=broker, connect_batch=args.ramp)
    except MosquittoUnavailable as exc:
        say(f"[baseline] skipping {broker}: {exc}")
        return {"status": "skipped"}
    except TimeoutError:
        say(f"[baseline] {broker}: aborted after {args.time_limit:.0f} s")
        return {"status": "timeout"}


# -- driver ---------------------------------------------------------------------------------------


async def run_scenario(
    name: str, body: Callable[[Run], Awaitable[None]], limit: float, results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    run = Run(name)
    say(f"\n=== {name} (time limit {limit:.0f} s) ===")
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            await body(run)
    except TimeoutError:
        run.values = {"status": "timeout", "phase": run.phase, **run.values}
        say(f"[{name}] ABORTED: time limit of {limit:.0f} s reached in phase '{run.phase}'")
    except Aborted as exc:
        run.values = {"status": exc.status, "phase": run.phase, **run.values}
        say(f"[{name}] ABORTED: {exc}")
    except Exception as exc:
        run.values = {"status": "failed", "phase": run.phase, "error": type(exc).__name__, **run.values}
        say(f"[{name}] FAILED in phase '{run.phase}': {exc!r}")
    run.values["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results[name] = run.values
    return run.values


def check_targets(name: str, v: dict[str, Any], fleet: dict[str, Any] | None) -> None:
    """Print each target against the figure measured (stderr) and add targets_met to `v`."""
    if v.get("status") != "ok":
        return
    checks: list[tuple[str, bool]] = []
    if name == "fleet":
        checks += [(">= 5,000 msg/s", v["mps"] >= 5000), ("lost 0", v["lost"] == 0)]
    elif name == "fleet10k":
        checks.append(("lost 0", v["lost"] == 0))
        checks.append(("connect storm < 60 s", v["storm_s"] < 60))
        checks.append(("peak RSS < 1 GiB", v["rss_mb"] * 2**20 < RSS_TARGET))
        if fleet and fleet.get("status") == "ok" and fleet.get("mps"):
            v["vs_fleet"] = round(v["mps"] / fleet["mps"], 2)
            checks.append(("msg/s within 20% of fleet", v["vs_fleet"] >= 0.8))
    elif name == "commands":
        checks += [
            (f"p99 < 50 ms at {v['rate_per_s']:g}/s", v["rate_p99_ms"] < 50 and v["rate_failed"] == 0),
            ("all answered", v["ok"] == v["commands"]),
        ]
    if not checks:
        return
    v["targets_met"] = all(ok for _, ok in checks)
    say(f"[{name}] targets: " + ", ".join(f"{t} {'MET' if ok else 'MISSED'}" for t, ok in checks))


async def main_async(args: argparse.Namespace) -> int:
    nofile = raise_nofile_limit()
    need = max(args.devices, args.devices_10k if args.scenario in ("fleet10k", "all") else 0)
    say(f"open-file limit {nofile} (needs ~{need + 200} for {need} clients); {os.cpu_count()} CPUs")
    wanted = SCENARIOS if args.scenario == "all" else (args.scenario,)
    results: dict[str, dict[str, Any]] = {}
    lines: list[str] = []

    def emit(name: str, v: dict[str, Any]) -> None:
        check_targets(name, v, results.get("fleet"))
        if (other := v.get("host_other_pct", 0)) > 30:
            say(f"[{name}] WARNING: {other:.0f}% of a core went to neither server nor generator (other processes?)")
        line = result_line(name, v)
        lines.append(line)
        print(line, flush=True)

    async def fleet_run(name: str, n: int, limit: float) -> None:
        v = await run_scenario(name, lambda run: scenario_fleet(run, n, args), limit, results)
        emit(name, v)

    for name in wanted:
        if name == "fleet":
            await fleet_run("fleet", args.devices, args.time_limit)
        elif name == "fleet10k":
            await fleet_run("fleet10k", args.devices_10k, args.time_limit_10k)
        elif name == "commands":
            v = await run_scenario(
                "commands", lambda run: scenario_commands(run, args.devices, args), args.time_limit, results
            )
            emit("commands", v)
        elif name == "baseline":
            if results.get("fleet", {}).get("status") != "ok":
                say("[baseline] no Gatehouse fleet figure from this run: running the fleet scenario first")
                await fleet_run("fleet", args.devices, args.time_limit)
            say(f"\n=== baseline (time limit {args.time_limit:.0f} s per broker) ===")
            gh = results["fleet"].get("mps") if results["fleet"].get("status") == "ok" else None
            v: dict[str, Any] = {"devices": args.devices, "messages": args.messages, "window": args.window}
            statuses = []
            for broker in ("amqtt", "mosquitto"):
                r = await reference_broker(broker, args.devices, args)
                statuses.append(r.get("status", "ok"))
                v[f"{broker}_mps"] = r.get("baseline_mps", "n/a")
                v[f"{broker}_lost"] = r.get("lost", "n/a")
                v[f"{broker}_cpu_pct"] = r.get("broker_cpu_pct", "n/a")
                v[f"{broker}_gen_cpu_pct"] = r.get("generator_cpu_pct", "n/a")
                ref = r.get("baseline_mps")
                v[f"gatehouse_fleet_over_{broker}"] = round(gh / ref, 3) if gh and ref else "n/a"
            v = {"status": "ok" if all(s == "ok" for s in statuses) else "partial", "gatehouse_fleet_mps": gh, **v}
            results["baseline"] = v
            emit("baseline", v)
    if len(lines) > 1:
        say("\n=== summary ===")
        for line in lines:
            say("  " + line.removeprefix("RESULT "))
    return 0 if all(r.get("status") == "ok" for r in results.values()) else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    ap.add_argument("--devices", type=int, default=1000, help="devices for fleet, commands and baseline")
    ap.add_argument("--devices-10k", type=int, default=10_000, help="devices for fleet10k")
    ap.add_argument("--messages", type=int, default=50, help="QoS 1 telemetry messages per device")
    ap.add_argument("--window", type=int, default=5, help="QoS 1 messages in flight per device")
    ap.add_argument("--ramp", type=int, default=100, help="connects (with their SUBSCRIBE) in flight at once")
    ap.add_argument("--setup-concurrency", type=int, default=20, help="devices set up over REST at once")
    ap.add_argument("--commands", type=int, default=2000, help="REST commands in the commands scenario")
    ap.add_argument("--command-concurrency", type=int, default=20, help="REST commands in flight (saturation)")
    ap.add_argument("--command-rate", type=float, default=100, help="open-loop commands per second")
    ap.add_argument("--rate-seconds", type=float, default=10, help="open-loop duration")
    ap.add_argument("--time-limit", type=float, default=300, help="seconds per scenario (and per baseline broker)")
    ap.add_argument("--time-limit-10k", type=float, default=600, help="seconds for fleet10k (setup included)")
    ap.add_argument("--stall", type=float, default=60, help="abort a phase whose progress stops this long")
    args = ap.parse_args()
    try:
        import uvloop
    except ImportError:
        rc = asyncio.run(main_async(args))
    else:
        rc = uvloop.run(main_async(args))
    sys.exit(rc)


if __name__ == "__main__":
    main()
