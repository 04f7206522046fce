"""The broker's limits against a real server: packet size, the outgoing queue of a slow subscriber,
inbound backpressure without loss, and the `/metrics` counters that report them."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator

import aiohttp
import pytest

from tests.mqtt import Client
from tests.raw import PINGRESP, PUBLISH, RawSession, parse_publish
from tests.support import Api, Server, eventually, make_server

NOT_AUTHORIZED = 0x87  # paho 2.x's reason code for CONNACK return code 5


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """1 KiB packets at most; at most 2 inbound messages in hand per connection."""
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-small"),
        GATEHOUSE_BROKER__ALLOW_ANONYMOUS="true",
        GATEHOUSE_BROKER__MAX_PACKET_SIZE="1024",
        GATEHOUSE_BROKER__MAX_INBOUND_MESSAGES="2",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """5 messages queued and 1 in flight per client."""
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-queue"),
        GATEHOUSE_BROKER__ALLOW_ANONYMOUS="true",
        GATEHOUSE_BROKER__MAX_QUEUED_MESSAGES="5",
        GATEHOUSE_BROKER__MAX_INFLIGHT_MESSAGES="1",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


async def metric(server: Server, name: str, **labels: str) -> float:
    """Sum of the samples of `name` on the server's /metrics whose labels include `labels`."""
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    total, found = 0.0, False
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
            found = True
    # A labelled series appears on first use; the metric itself must be there.
    assert found or (labels and f"# HELP {name} " in text), f"{name}{labels or ''} not in /metrics"
    return total


async def grows(server: Server, name: str, before: float, by: float = 1, **labels: str) -> float:
    """Wait until the metric is at least `before + by`; return it."""

    async def check() -> float | None:
        now = await metric(server, name, **labels)
        return now if now >= before + by else None

    return await eventually(check, timeout=5)


def new_topic(leaf: str = "m") -> str:
    return f"test/{uuid.uuid4().hex}/{leaf}"


def new_id(prefix: str = "l") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- 8. max packet size -------------------------------------------------------------------------------


async def test_oversize_packet_closes_only_that_connection(
    small_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port, topic = small_server.mqtt_port, new_topic()
    before = await metric(small_server, "gatehouse_mqtt_oversize_packets_total")
    bystander = clients()
    assert await bystander.connect(port) == 0
    assert await bystander.subscribe(topic, 1) == 1

    big = raws()
    assert await big.connect(port, new_id(), clean=True) == (0, 0)
    await big.publish(topic, b"x" * 2048, qos=1)
    assert await big.closed_by_server(3), "a 2 KiB packet over a 1 KiB limit left the connection open"
    assert not big.backlog
    await grows(small_server, "gatehouse_mqtt_oversize_packets_total", before)

    # Nothing of it was delivered; everyone else carries on.
    assert await bystander.nothing(0.3) == []
    assert not bystander.disconnected.is_set()
    assert await bystander.publish(topic, b"still-here", qos=1)
    assert (await bystander.receive_on(topic)).payload == b"still-here"

    # A packet under the limit passes (1000 bytes in all: topic, packet id and payload).
    fits = raws()
    assert await fits.connect(port, new_id(), clean=True) == (0, 0)
    payload = b"y" * (1000 - 2 - len(topic) - 2)
    pid = await fits.publish(topic, payload, qos=1)
    puback = await fits.expect(4)
    assert int.from_bytes(puback.body, "big") == pid
    msg = await bystander.receive_on(topic)
    assert msg.payload == payload
    await fits.ping()


# --- 9. outgoing queue bound ---------------------------------------------------------------------------


async def test_qos1_subscriber_over_its_queue_is_disconnected(
    queue_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port, topic = queue_server.mqtt_port, new_topic()
    slow_before = await metric(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total")
    sub = raws()
    cid = new_id("slow")
    assert await sub.connect(port, cid, clean=True) == (0, 0)
    assert await sub.subscribe(topic, 1) == 1
    other = raws()  # a subscriber on another topic is not affected
    assert await other.connect(port, new_id(), clean=True) == (0, 0)
    assert await other.subscribe(f"{topic}/other", 1) == 1

    pub = clients()
    assert await pub.connect(port) == 0
    for n in range(6):  # 1 in flight (never acknowledged) + 5 queued: at the limit, not over
        assert await pub.publish(topic, f"m{n}".encode(), qos=1)
    first = await sub.next_publish(3)
    assert first is not None and first.payload == b"m0"
    await sub.ping()
    assert await metric(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total") == slow_before

    assert await pub.publish(topic, b"m6", qos=1)  # the 7th: over the limit
    assert await sub.closed_by_server(3), "a QoS 1 subscriber over its outgoing queue limit is still connected"
    await grows(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total", slow_before)
    assert f"client {cid} stays over its outgoing queue limit" in queue_server.log()

    assert not pub.disconnected.is_set()
    assert await pub.publish(f"{topic}/other", b"fine", qos=1)
    msg = await other.next_publish(3)
    assert msg is not None and msg.payload == b"fine"
    await other.ack(msg.packet_id)
    await other.ping()


async def test_qos0_subscriber_that_stops_reading_loses_messages_not_its_connection(
    queue_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port, topic = queue_server.mqtt_port, new_topic()
    dropped_before = await metric(queue_server, "gatehouse_mqtt_messages_dropped_total")
    slow_before = await metric(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total")
    sub = raws()
    assert await sub.connect(port, new_id("deaf"), clean=True, rcvbuf=4096) == (0, 0)
    assert await sub.subscribe(topic, 0) == 0

    # The subscriber reads nothing now: once the socket buffers are full, the broker's queue for it
    # fills, and QoS 0 messages past its bound are dropped.
    pub = clients()
    assert await pub.connect(port) == 0
    total, payload = 100, b"z" * (60 * 1024)
    for n in range(total):
        assert await pub.publish(topic, n.to_bytes(4, "big") + payload, qos=1)
    await grows(queue_server, "gatehouse_mqtt_messages_dropped_total", dropped_before)

    # Now it reads again: whatever was not dropped arrives, in order, and the connection is up.
    got: list[int] = []
    await sub.send(b"\xc0\x00")  # PINGREQ, answered once the broker's queue for it has drained
    while True:
        packet = await sub.read(5)
        assert packet is not None, "the connection stalled"
        if packet.kind == PINGRESP:
            break
        assert packet.kind == PUBLISH
        got.append(int.from_bytes(parse_publish(packet).payload[:4], "big"))
    got += [int.from_bytes(m.payload[:4], "big") for m in await sub.publishes(0.3)]
    dropped = await metric(queue_server, "gatehouse_mqtt_messages_dropped_total") - dropped_before
    assert 0 < len(got) < total
    assert got == sorted(got)
    assert len(got) + dropped == total
    assert await metric(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total") == slow_before
    await sub.ping()


# --- 10. inbound backpressure ----------------------------------------------------------------------------


async def test_inbound_bound_loses_nothing(small_server: Server, clients: Callable[..., Client]) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, small_server.url)
        await api.login("alice@example.com")
        device, key = await api.claimed_device()
        me = device["username"]
        client = clients()
        client.paho.max_inflight_messages_set(50)
        client.paho.max_queued_messages_set(0)
        assert await client.connect(small_server.mqtt_port, me, key) == 0
        infos = [client.paho.publish(f"devices/{me}/telemetry", json.dumps({"n": n}), qos=1) for n in range(50)]

        def all_acked() -> bool:
            for info in infos:
                info.wait_for_publish(15)
            return all(info.is_published() for info in infos)

        assert await asyncio.to_thread(all_acked), "not every publish was acknowledged"
        assert not client.disconnected.is_set()
        status, body = await api.call("GET", f"/gateway/devices/{device['id']}/telemetry?limit=100")
        assert status == 200, body
        stored = sorted(
            json.loads(r["payload"])["n"] if isinstance(r["payload"], str) else r["payload"]["n"]
            for r in body["results"]
        )
        assert stored == list(range(50))


# --- 11. /metrics ---------------------------------------------------------------------------------------


async def test_metrics_follow_broker_activity(
    small_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    srv, port, topic = small_server, small_server.mqtt_port, new_topic()
    connections = await metric(srv, "gatehouse_mqtt_connections")
    sessions = await metric(srv, "gatehouse_mqtt_sessions")
    messages_in = await metric(srv, "gatehouse_mqtt_messages_in_total")
    messages_out = await metric(srv, "gatehouse_mqtt_messages_out_total")
    queued = await metric(srv, "gatehouse_mqtt_queued_messages")
    auth_failures = await metric(srv, "gatehouse_mqtt_auth_failures_total")
    acl_publish = await metric(srv, "gatehouse_mqtt_acl_denials_total", action="publish")
    acl_subscribe = await metric(srv, "gatehouse_mqtt_acl_denials_total", action="subscribe")

    # A persistent subscriber that never acknowledges: a connection, a session, a queued message.
    sub = raws()
    cid = new_id("metrics")
    assert await sub.connect(port, cid, clean=False) == (0, 0)
    assert await sub.subscribe(topic, 1) == 1
    assert await sub.subscribe("devices/#", 1) == 0x80
    await grows(srv, "gatehouse_mqtt_connections", connections)
    await grows(srv, "gatehouse_mqtt_sessions", sessions)
    await grows(srv, "gatehouse_mqtt_acl_denials_total", acl_subscribe, action="subscribe")

    pub = clients()
    assert await pub.connect(port) == 0
    assert await pub.publish(topic, b"counted", qos=1)
    msg = await sub.next_publish(3)
    assert msg is not None
    await grows(srv, "gatehouse_mqtt_messages_in_total", messages_in)
    await grows(srv, "gatehouse_mqtt_messages_out_total", messages_out)
    await grows(srv, "gatehouse_mqtt_queued_messages", queued)  # in flight, unacknowledged

    assert await pub.publish("devices/nobody/telemetry", b"{}", qos=1)  # anonymous: dropped by the ACL
    await grows(srv, "gatehouse_mqtt_acl_denials_total", acl_publish, action="publish")

    refused = clients()
    assert await refused.connect(port, f"nobody-{uuid.uuid4().hex[:8]}", "wrong") == NOT_AUTHORIZED
    await grows(srv, "gatehouse_mqtt_auth_failures_total", auth_failures)

    await sub.ack(msg.packet_id)

    async def queue_back() -> bool:
        return await metric(srv, "gatehouse_mqtt_queued_messages") <= queued

    await eventually(queue_back)
    await sub.disconnect()
    pub.close()

    async def closed() -> bool:
        return await metric(srv, "gatehouse_mqtt_connections") <= connections

    await eventually(closed)
    # The persistent session outlives its connection.
    assert await metric(srv, "gatehouse_mqtt_sessions") >= sessions + 1
    cleaner = raws()
    await cleaner.connect(port, cid, clean=True)
    await cleaner.disconnect()

    async def session_gone() -> bool:
        return await metric(srv, "gatehouse_mqtt_sessions") <= sessions

    await eventually(session_gone)


async def test_subscriber_that_stops_reading_is_disconnected_when_over_its_queue(
    queue_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    # The case the limit is for: a subscriber that stops reading. Large QoS 0 messages fill its
    # socket, so the broker's sends to it block and its queue fills (QoS 0 dropped); a QoS 1
    # message then puts it over the limit and it must be disconnected, while it still reads nothing.
    port, topic = queue_server.mqtt_port, new_topic()
    dropped_before = await metric(queue_server, "gatehouse_mqtt_messages_dropped_total")
    slow_before = await metric(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total")
    connections = await metric(queue_server, "gatehouse_mqtt_connections")
    sub = raws()
    cid = new_id("stuck")
    assert await sub.connect(port, cid, clean=True, rcvbuf=4096) == (0, 0)
    assert await sub.subscribe(f"{topic}/bulk", 0) == 0
    assert await sub.subscribe(f"{topic}/important", 1) == 1
    await grows(queue_server, "gatehouse_mqtt_connections", connections)

    pub = clients()
    assert await pub.connect(port) == 0
    payload = b"z" * (60 * 1024)
    for _ in range(100):
        assert await pub.publish(f"{topic}/bulk", payload, qos=1)
    await grows(queue_server, "gatehouse_mqtt_messages_dropped_total", dropped_before)
    assert await pub.publish(f"{topic}/important", b"must-arrive", qos=1)
    await grows(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total", slow_before)
    assert f"client {cid} stays over its outgoing queue limit" in queue_server.log()

    # Cut off by the server although it never read: its socket ends (reset or EOF) and the broker
    # counts one connection fewer (the publisher is still connected).
    assert await sub.closed_by_server(3)

    async def dropped_by_server() -> bool:
        return await metric(queue_server, "gatehouse_mqtt_connections") <= connections + 1

    await eventually(dropped_by_server, timeout=3)


async def test_offline_queue_is_bounded(
    queue_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    # An offline persistent session keeps at most max_queued_messages; later QoS 1 messages are
    # dropped and counted, and the session itself carries on.
    port, topic, cid = queue_server.mqtt_port, new_topic(), new_id("away")
    sub = raws()
    assert await sub.connect(port, cid, clean=False) == (0, 0)
    assert await sub.subscribe(topic, 1) == 1
    await sub.disconnect(wait=5)  # the server has ended the connection: the session is offline
    dropped_before = await metric(queue_server, "gatehouse_mqtt_messages_dropped_total")
    pub = clients()
    assert await pub.connect(port) == 0
    for n in range(8):
        assert await pub.publish(topic, f"m{n}".encode(), qos=1)
    assert await metric(queue_server, "gatehouse_mqtt_messages_dropped_total") - dropped_before == 3

    back = raws()
    assert await back.connect(port, cid, clean=False) == (1, 0)
    got = []
    for _ in range(5):
        msg = await back.next_publish(3)
        assert msg is not None, got
        got.append(msg.payload)
        await back.ack(msg.packet_id)
    assert got == [f"m{n}".encode() for n in range(5)]
    assert await back.publishes(0.3) == []
    assert await pub.publish(topic, b"later", qos=1)
    msg = await back.next_publish(3)
    assert msg is not None and msg.payload == b"later"
    await back.ack(msg.packet_id)
    await back.disconnect()
    cleaner = raws()
    await cleaner.connect(port, cid, clean=True)
    await cleaner.disconnect()


async def test_offline_queue_overflow_is_not_a_slow_subscriber_disconnect(
    queue_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port, topic, cid = queue_server.mqtt_port, new_topic(), new_id("away")
    sub = raws()
    assert await sub.connect(port, cid, clean=False) == (0, 0)
    assert await sub.subscribe(topic, 1) == 1
    await sub.disconnect(wait=5)  # the server has ended the connection: the session is offline
    slow_before = await metric(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total")
    pub = clients()
    assert await pub.connect(port) == 0
    for n in range(7):
        assert await pub.publish(topic, f"m{n}".encode(), qos=1)
    try:
        assert await metric(queue_server, "gatehouse_mqtt_slow_subscriber_disconnects_total") == slow_before
        assert f"client {cid} stays over its outgoing queue limit" not in queue_server.log()
    finally:
        cleaner = raws()
        await cleaner.connect(port, cid, clean=True)
        await cleaner.disconnect()


async def test_sigterm_with_a_subscriber_that_stops_reading(
    queue_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    # Last in this module: it stops queue_server.
    port, topic = queue_server.mqtt_port, new_topic()
    dropped_before = await metric(queue_server, "gatehouse_mqtt_messages_dropped_total")
    sub = raws()
    assert await sub.connect(port, new_id("deaf"), clean=True, rcvbuf=4096) == (0, 0)
    assert await sub.subscribe(topic, 0) == 0
    pub = clients()
    assert await pub.connect(port) == 0
    for _ in range(100):
        assert await pub.publish(topic, b"z" * (60 * 1024), qos=1)
    await grows(queue_server, "gatehouse_mqtt_messages_dropped_total", dropped_before)
    proc = queue_server.proc
    assert proc is not None
    proc.terminate()
    try:
        code: int | None = await asyncio.to_thread(proc.wait, 5)  # it takes well under a second
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            proc.kill()
        queue_server.stop()
    assert code == 0, "SIGTERM did not stop the server within 5 s"
