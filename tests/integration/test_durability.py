"""What an acknowledged QoS 1 telemetry publish guarantees: it is committed before its PUBACK."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import Api, Server, fetch, make_server


async def stored_seqs(server: Server, device_id: int) -> list[int]:
    """Read straight from the database, so what a killed server had committed is what counts."""
    rows = await fetch(server, "SELECT payload FROM telemetry WHERE device_id = ?", device_id)
    return [json.loads(r[0])["seq"] for r in rows]


async def _publish_until(server: Server, stop: signal.Signals, tmp_path: Path) -> tuple[set[int], list[int], int]:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.url)
        await api.login("alice@example.com")
        device, key = await api.claimed_device()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{device['username']}-durable", protocol=paho.MQTTv311)
    client.username_pw_set(device["username"], key)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", server.mqtt_port)
    client.loop_start()
    infos = []
    try:
        for seq in range(3000):
            infos.append((seq, client.publish(f"devices/{device['username']}/telemetry", json.dumps({"seq": seq}), 1)))
            if seq == 1500:
                # Signal the server while hundreds of samples are in flight.
                code = server.stop(stop)
                break
            if seq % 50 == 0:
                await asyncio.sleep(0.01)
    finally:
        client.loop_stop()
    acked = {seq for seq, info in infos if info.is_published()}
    return acked, await stored_seqs(server, device["id"]), code


async def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    try:
        acked, stored, code = await _publish_until(server, signal.SIGKILL, tmp_path)
    finally:
        server.stop()
    assert code == -signal.SIGKILL
    assert acked, "no PUBACK arrived before the kill"
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged samples lost, e.g. {sorted(missing)[:5]}"
    assert len(stored) == len(set(stored)), "a sample was stored twice"


async def test_sigterm_flushes_and_exits_cleanly(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    try:
        acked, stored, code = await _publish_until(server, signal.SIGTERM, tmp_path)
        log = server.log()
    finally:
        server.stop()
    assert code == 0, log[-3000:]
    assert acked <= set(stored)
    assert "stopped" in log
    assert "Traceback" not in log, log[-3000:]
