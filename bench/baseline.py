"""Baseline: QoS 1 telemetry forwarded by a reference broker (separate process) to one subscriber.

python -m bench.baseline --devices 100 --messages 50 [--window 10] [--broker amqtt|mosquitto]

`amqtt` is bare amqtt 0.12.1 (bench/_bare_amqtt.py); `mosquitto` is Mosquitto with a generated
config (bench/_mosquitto.py, installed with apt-get when missing and running as root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import psutil

from bench._mosquitto import start_mosquitto
from firmware_sim.mqtt import MqttClient
from firmware_sim.stats import Progress, Stats

BARE_BROKER = Path(__file__).with_name("_bare_amqtt.py")
WINDOW = 10  # in-flight QoS 1 messages per publisher
CONNECT_BATCH = 50  # concurrent CONNECTs while ramping up
DRAIN_WAIT_S = 10.0


async def _start_broker() -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(BARE_BROKER), stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"bare broker failed to start (output {line!r}, rc {proc.returncode})")
        return proc, int(line.split()[1])
    except BaseException:
        await _kill(proc)
        raise


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _publisher(client: MqttClient, index: int, count: int, window: int, stats: Stats) -> None:
    topic = f"bench/{index}/telemetry"
    seqs = iter(range(count))

    async def worker() -> None:
        for seq in seqs:  # shared iterator: `window` workers = `window` messages in flight
            payload = json.dumps({"t": seq, "v": 1.5}).encode()
            stats.sent += 1
            start = time.perf_counter()
            await client.publish(topic, payload, qos=1)
            stats.record_latency(time.perf_counter() - start)
            stats.acked += 1

    await asyncio.gather(*(worker() for _ in range(min(window, count))))


async def run_baseline(
    devices: int,
    messages_per_device: int,
    *,
    host: str = "127.0.0.1",
    window: int = WINDOW,
    broker: str = "amqtt",
    connect_batch: int = CONNECT_BATCH,
) -> dict:
    """Publish devices x messages QoS 1 samples through `broker` to one subscriber; forwarded msg/s."""
    if broker == "amqtt":
        proc, port = await _start_broker()
    elif broker == "mosquitto":
        proc, port = await start_mosquitto()
    else:
        raise ValueError(f"unknown broker {broker!r}")
    clients: list[MqttClient] = []
    try:
        broker_ps, me = psutil.Process(proc.pid), psutil.Process(os.getpid())
        sub = MqttClient()
        clients.append(sub)
        await sub.connect(host, port, client_id="bench-sub")
        if (rc := await sub.subscribe("bench/+/telemetry", qos=1)) != 1:
            raise RuntimeError(f"subscribe refused: rc {rc:#x}")

        pubs = [MqttClient() for _ in range(devices)]
        clients.extend(pubs)
        for lo in range(0, devices, connect_batch):
            await asyncio.gather(
                *(
                    c.connect(host, port, client_id=f"bench-dev-{i}")
                    for i, c in enumerate(pubs[lo : lo + connect_batch], start=lo)
                )
            )

        total = devices * messages_per_device
        received: set[tuple[str, bytes]] = set()
        last_recv = 0.0
        done = asyncio.Event()

        async def receive() -> None:
            nonlocal last_recv
            while True:
                received.add(await sub.messages.get())
                last_recv = time.perf_counter()
                if len(received) >= total:
                    done.set()

        stats = Stats()
        progress = Progress(f"baseline[{broker}]")
        receiver = asyncio.create_task(receive())
        cpu0 = (broker_ps.cpu_times(), me.cpu_times())
        t0 = time.perf_counter()
        publishing = asyncio.gather(*(_publisher(c, i, messages_per_device, window, stats) for i, c in enumerate(pubs)))
        while not publishing.done():
            await asyncio.wait([publishing], timeout=0.25)
            rate = len(received) / max(time.perf_counter() - t0, 1e-9)
            progress.update(f"acked {stats.acked}/{total} received {len(received)} ({rate:,.0f} msg/s)")
        publishing.result()
        t_last_pub = time.perf_counter()
        deadline = t_last_pub + DRAIN_WAIT_S  # forwarded messages may still trail the PUBACKs
        while not done.is_set() and time.perf_counter() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)
            progress.update(f"acked {stats.acked}/{total} received {len(received)} (draining)")
        receiver.cancel()
        cpu1 = (broker_ps.cpu_times(), me.cpu_times())
        seconds = (last_recv or t_last_pub) - t0
        mps = len(received) / seconds if seconds > 0 else 0.0
        progress.close(
            f"received {len(received)}/{total} in {seconds:.2f}s = {mps:,.0f} msg/s; publisher {stats.summary()}"
        )
        broker_cpu = sum(cpu1[0][:2]) - sum(cpu0[0][:2])
        gen_cpu = sum(cpu1[1][:2]) - sum(cpu0[1][:2])
        return {
            "broker": broker,
            "baseline_mps": round(mps, 1),
            "lost": stats.sent - len(received),
            "seconds": round(seconds, 3),
            "sent": stats.sent,
            "received": len(received),
            "puback_p50_ms": round(stats.p50, 2),
            "puback_p99_ms": round(stats.p99, 2),
            "broker_cpu_pct": round(100 * broker_cpu / seconds, 1) if seconds > 0 else 0.0,
            "generator_cpu_pct": round(100 * gen_cpu / seconds, 1) if seconds > 0 else 0.0,
        }
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True), 5)
        await _kill(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--messages", type=int, default=50, help="QoS 1 messages per device")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--window", type=int, default=WINDOW, help="in-flight QoS 1 messages per publisher")
    ap.add_argument("--broker", choices=["amqtt", "mosquitto"], default="amqtt")
    args = ap.parse_args()
    coro = run_baseline(args.devices, args.messages, host=args.host, window=args.window, broker=args.broker)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(f"RESULT baseline_mps={result['baseline_mps']:.0f} lost={result['lost']}")
    print("DETAIL " + json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
