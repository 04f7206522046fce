"""The broker's door, tried from outside: packet order, strict decoding, sockets that never leak,
bounds in bytes, client ids no device can squat, presence only the broker writes, and client
mistakes answered rather than punished."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import psutil
import pytest

from tests.integration.test_broker_limits import metric
from tests.mqtt import Client
from tests.raw import (
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    SUBACK,
    RawSession,
    connect_packet,
    packet,
    utf8,
)
from tests.support import Api, Server, eventually, make_server

IDENTIFIER_REJECTED, SERVER_UNAVAILABLE, NOT_AUTHORIZED = 2, 3, 5


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Small bounds: 64 KiB queued per client, 3 retained (or 10 KiB) per device, 2 connections a device."""
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-bounded"),
        GATEHOUSE_BROKER__ALLOW_ANONYMOUS="true",
        GATEHOUSE_BROKER__MAX_QUEUED_BYTES="65536",
        GATEHOUSE_BROKER__MAX_RETAINED_PER_DEVICE="3",
        GATEHOUSE_BROKER__MAX_RETAINED_BYTES_PER_DEVICE="10240",
        GATEHOUSE_BROKER__MAX_CONNECTIONS_PER_IDENTITY="2",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


@pytest.fixture
async def bounded_alice(bounded_server: Server, http: aiohttp.ClientSession) -> Api:
    api = Api(http, bounded_server.url)
    await api.login("alice@example.com")
    return api


async def device_session(
    api: Api, raws: Callable[[], RawSession], port: int
) -> tuple[dict[str, Any], str, str, RawSession]:
    """A claimed device connected with its username as client id: (device, username, key, session)."""
    device, key = await api.claimed_device()
    me = device["username"]
    raw = raws()
    assert await raw.connect(port, me, username=me, password=key) == (0, 0)
    return device, me, key, raw


def subscribe(topic_filter: str, qos: int, pid: int) -> bytes:
    return packet(0x82, pid.to_bytes(2, "big") + utf8(topic_filter) + bytes([qos]))


def publish(topic: str | bytes, payload: bytes, qos: int, pid: int = 1) -> bytes:
    return packet(0x30 | (qos << 1), utf8(topic) + (pid.to_bytes(2, "big") if qos else b"") + payload)


async def complete(raw: RawSession, qos: int, pid: int) -> None:
    """Finish the flows of one round: our publish's acknowledgement, then the delivery's."""
    if qos == 1:
        await raw.expect(PUBACK)
    elif qos == 2:
        await raw.expect(PUBREC)
        await raw.ack(pid, PUBREL)
        await raw.expect(PUBCOMP)


# --- ordering [MQTT-4.6.0] ---------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_subscribe_and_publish_in_one_write_200_times_200_deliveries(
    anon_server: Server, raws: Callable[[], RawSession], qos: int
) -> None:
    raw = raws()
    assert await raw.connect(anon_server.mqtt_port, f"order-{uuid.uuid4().hex[:8]}") == (0, 0)
    base = f"order/{uuid.uuid4().hex}"
    delivered = 0
    for n in range(200):
        pid = n % 60000 + 1
        await raw.send(subscribe(f"{base}/{n}", qos, pid) + publish(f"{base}/{n}", b"%d" % n, qos, pid))
        await raw.expect(SUBACK)
        await complete(raw, qos, pid)
        msg = await raw.next_publish(5)
        assert msg is not None, f"round {n}: the client's own message was not delivered"
        assert (msg.topic, msg.payload, msg.qos) == (f"{base}/{n}", b"%d" % n, qos)
        delivered += 1
        if qos == 1:
            await raw.ack(msg.packet_id)
        elif qos == 2:
            await raw.ack(msg.packet_id, PUBREC)
            await raw.expect(PUBREL)
            await raw.ack(msg.packet_id, PUBCOMP)
    assert delivered == 200
    await raw.disconnect()


async def test_publish_before_subscribe_is_not_delivered(anon_server: Server, raws: Callable[[], RawSession]) -> None:
    raw = raws()
    assert await raw.connect(anon_server.mqtt_port, f"order-{uuid.uuid4().hex[:8]}") == (0, 0)
    topic = f"order/{uuid.uuid4().hex}"
    await raw.send(publish(topic, b"early", 1) + subscribe(topic, 1, 2) + b"\xc0\x00")
    await raw.expect(PUBACK)
    await raw.expect(SUBACK)
    await raw.expect(PINGRESP)
    assert list(raw.backlog) == []


async def test_routed_publish_after_subscribe_in_one_write_is_delivered(
    server: Server, alice: Api, raws: Callable[[], RawSession]
) -> None:
    # Telemetry waits for its commit before the PUBACK, in the pipeline: the SUBSCRIBE before it
    # is in force when it is republished.
    device, key = await alice.claimed_device()
    me = device["username"]
    raw = raws()
    assert await raw.connect(server.mqtt_port, f"{me}-order", username=me, password=key) == (0, 0)
    topic = f"devices/{me}/telemetry"
    for n in range(20):
        await raw.send(subscribe(topic, 1, 2 * n + 1) + publish(topic, json.dumps({"n": n}).encode(), 1, 2 * n + 2))
        await raw.expect(SUBACK)
        await raw.expect(PUBACK)
        msg = await raw.next_publish(5)
        assert msg is not None and json.loads(msg.payload) == {"n": n}
        await raw.ack(msg.packet_id)
        await raw.send(packet(0xA2, (2 * n + 1).to_bytes(2, "big") + utf8(topic)))
    await raw.disconnect()


# --- strict decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(publish(b"t/\xff\xfe", b"\xc0\x00\xc0\x00", 0), id="invalid-utf8-topic-pingreq-in-payload"),
        pytest.param(publish(b"t/\x00x", b"x", 1), id="nul-in-topic"),
        pytest.param(packet(0x36, utf8("t") + b"\x00\x01x"), id="publish-qos3"),
        pytest.param(publish("t", b"x", 1, pid=0), id="packet-id-0"),
        pytest.param(packet(0x80, b"\x00\x01" + utf8("t") + b"\x00"), id="subscribe-wrong-flags"),
        pytest.param(packet(0x82, b"\x00\x01"), id="subscribe-no-filter"),
    ],
)
async def test_malformed_packet_closes_the_connection_and_is_counted(
    anon_server: Server, raws: Callable[[], RawSession], bad: bytes
) -> None:
    before = await metric(anon_server, "gatehouse_mqtt_malformed_packets_total")
    raw = raws()
    assert await raw.connect(anon_server.mqtt_port, f"bad-{uuid.uuid4().hex[:8]}") == (0, 0)
    await raw.send(bad + b"\xc0\x00")
    assert await raw.closed_by_server(3), "the connection stayed open after a malformed packet"
    assert await metric(anon_server, "gatehouse_mqtt_malformed_packets_total") == before + 1


async def test_will_qos_3_is_closed_without_connack(anon_server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", anon_server.mqtt_port)
    try:
        writer.write(connect_packet("w3", will=("w/x", b"x", 3, False)))
        assert await asyncio.wait_for(reader.read(100), 5) == b""
    finally:
        writer.close()


# --- no socket is left behind ----------------------------------------------------------------------------


def open_mqtt_sockets(server: Server) -> list[str]:
    assert server.proc is not None
    conns = psutil.Process(server.proc.pid).net_connections(kind="tcp")
    return [c.status for c in conns if c.laddr and c.laddr.port == server.mqtt_port and c.status != "LISTEN"]


async def test_2000_connect_and_close_leave_no_socket_open(anon_server: Server) -> None:
    starts = [b"", b"\x10", connect_packet("half")[:7], b"\xff\xff", b"\x10\x80\x80\x80\x80\x01"]

    async def one(n: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", anon_server.mqtt_port)
        writer.write(starts[n % len(starts)])
        writer.close()
        await writer.wait_closed()

    for batch in range(20):
        await asyncio.gather(*(one(batch * 100 + i) for i in range(100)))

    async def none_left() -> bool:
        return not open_mqtt_sockets(anon_server)

    assert await eventually(none_left, timeout=15), open_mqtt_sockets(anon_server)[:20]


# --- bounds ---------------------------------------------------------------------------------------------


async def test_a_non_reading_subscriber_queue_is_bounded_in_bytes(
    bounded_server: Server, raws: Callable[[], RawSession]
) -> None:
    topic = f"flood/{uuid.uuid4().hex}"
    sub = raws()
    assert await sub.connect(bounded_server.mqtt_port, f"sub-{uuid.uuid4().hex[:8]}", rcvbuf=4096) == (0, 0)
    assert await sub.subscribe(topic, 0) == 0
    pub = raws()
    assert await pub.connect(bounded_server.mqtt_port, f"pub-{uuid.uuid4().hex[:8]}") == (0, 0)
    dropped = await metric(bounded_server, "gatehouse_mqtt_messages_dropped_total")
    for _ in range(100):
        await pub.publish(topic, b"x" * 20_000)
    await pub.ping()
    assert await metric(bounded_server, "gatehouse_mqtt_queued_bytes") <= 65536 + 20_100
    assert await metric(bounded_server, "gatehouse_mqtt_messages_dropped_total") > dropped
    sub.close()
    await pub.disconnect()


async def test_retained_messages_per_device_are_capped(
    bounded_server: Server, bounded_alice: Api, raws: Callable[[], RawSession]
) -> None:
    refused = await metric(bounded_server, "gatehouse_mqtt_retained_refused_total")
    _, me, key, raw = await device_session(bounded_alice, raws, bounded_server.mqtt_port)
    for n in range(5):
        await raw.publish(f"devices/{me}/r/{n}", b"kept?", qos=1, retain=True)
        await raw.expect(PUBACK)  # over the bound: still acknowledged (and delivered), not kept
    await raw.publish(f"devices/{me}/big", b"x" * 20_000, qos=1, retain=True)
    await raw.expect(PUBACK)
    assert await metric(bounded_server, "gatehouse_mqtt_retained_refused_total") == refused + 3
    await raw.disconnect(wait=5)
    late = raws()
    assert await late.connect(bounded_server.mqtt_port, f"{me}-late", username=me, password=key) == (0, 0)
    assert await late.subscribe(f"devices/{me}/#", 0) == 0
    got = {m.topic for m in await late.publishes(1.0)}
    # Three of the device's own plus the broker's status (not the device's to fill).
    assert got == {f"devices/{me}/r/0", f"devices/{me}/r/1", f"devices/{me}/r/2", f"devices/{me}/status"}
    await late.disconnect()


async def test_connections_per_device_are_capped(
    bounded_server: Server, bounded_alice: Api, raws: Callable[[], RawSession]
) -> None:
    device, key = await bounded_alice.claimed_device()
    me = device["username"]
    first, second, third = raws(), raws(), raws()
    assert await first.connect(bounded_server.mqtt_port, f"{me}-1", username=me, password=key) == (0, 0)
    assert await second.connect(bounded_server.mqtt_port, f"{me}-2", username=me, password=key) == (0, 0)
    assert await third.connect(bounded_server.mqtt_port, f"{me}-3", username=me, password=key) == (
        0,
        SERVER_UNAVAILABLE,
    )
    assert await third.closed_by_server(3)
    again = raws()  # taking over one of its own client ids is not one more connection
    assert await again.connect(bounded_server.mqtt_port, f"{me}-2", username=me, password=key) == (0, 0)
    assert await second.closed_by_server(3)
    await first.ping()
    await first.disconnect()
    await again.disconnect()


# --- client ids ----------------------------------------------------------------------------------------


async def test_no_device_can_squat_another_devices_client_id(
    server: Server, alice: Api, bob: Api, raws: Callable[[], RawSession]
) -> None:
    dev_a, key_a = await alice.claimed_device()
    dev_b, key_b = await bob.claimed_device()
    a, b = dev_a["username"], dev_b["username"]
    for squatted in (b, f"{b}-esp32", f"esp32-{b}"):
        raw = raws()
        assert await raw.connect(server.mqtt_port, squatted, clean=False, username=a, password=key_a) == (
            0,
            IDENTIFIER_REJECTED,
        )
        assert await raw.closed_by_server(3)
    owner = raws()
    assert await owner.connect(server.mqtt_port, b, clean=True, username=b, password=key_b) == (0, 0)
    await owner.disconnect()


async def test_a_username_prefix_cannot_squat_the_longer_devices_client_ids(
    server: Server, alice: Api, bob: Api, raws: Callable[[], RawSession]
) -> None:
    # Usernames may contain "-": device <a> owns "<a>-relay" as much as device "<a>-relay" does.
    # The more specific owner (the longer username) takes the client id over; the squatter's
    # connection is closed, nothing of its session is handed over, and it cannot take it back.
    short, short_key = await alice.claimed_device()
    a = short["username"]
    long = await bob.new_device("relay", username=f"{a}-relay")
    status, claim = await bob.claim(await bob.provision(long["id"]))
    assert status == 200, claim
    squatter = raws()
    assert await squatter.connect(server.mqtt_port, f"{a}-relay", clean=False, username=a, password=short_key) == (
        0,
        0,
    )
    assert await squatter.subscribe(f"devices/{a}/#", 1) == 1
    owner = raws()
    assert await owner.connect(
        server.mqtt_port, f"{a}-relay", clean=False, username=f"{a}-relay", password=claim["api_key"]
    ) == (0, 0)
    assert await squatter.closed_by_server(3)
    back = raws()
    assert await back.connect(server.mqtt_port, f"{a}-relay", clean=False, username=a, password=short_key) == (
        0,
        NOT_AUTHORIZED,
    )
    await owner.ping()
    await owner.disconnect(wait=5)
    cleaner = raws()
    assert await cleaner.connect(
        server.mqtt_port, f"{a}-relay", clean=True, username=f"{a}-relay", password=claim["api_key"]
    ) == (0, 0)
    await cleaner.disconnect()


async def test_a_provisioning_client_id_in_use_cannot_be_taken_over(
    server: Server, raws: Callable[[], RawSession]
) -> None:
    cid = f"setup-{uuid.uuid4().hex[:8]}"
    first = raws()
    assert await first.connect(server.mqtt_port, cid, username="provision", password="x") == (0, 0)
    second = raws()
    assert await second.connect(server.mqtt_port, cid, username="provision", password="x") == (0, IDENTIFIER_REJECTED)
    assert await second.closed_by_server(3)
    await first.ping()  # still connected, mid-claim
    await first.disconnect(wait=5)
    third = raws()
    assert await third.connect(server.mqtt_port, cid, username="provision", password="x") == (0, 0)
    await third.disconnect()


# --- presence and client mistakes ---------------------------------------------------------------------


async def test_a_device_cannot_write_its_own_presence(
    server: Server, alice: Api, raws: Callable[[], RawSession]
) -> None:
    _device, me, key, raw = await device_session(alice, raws, server.mqtt_port)
    await raw.publish(f"devices/{me}/status", b"spoofed", qos=1, retain=True)
    await raw.expect(PUBACK)  # dropped and counted, the connection stays
    assert await raw.subscribe(f"devices/{me}/status", 1) == 1
    msg = await raw.next_publish(5)
    assert msg is not None and (msg.payload, msg.retain) == (b"online", True)
    await raw.ack(msg.packet_id)
    await raw.disconnect(wait=5)

    watcher = raws()
    assert await watcher.connect(server.mqtt_port, f"{me}-w", username=me, password=key) == (0, 0)
    assert await watcher.subscribe(f"devices/{me}/status", 0) == 0
    assert [m.payload for m in await watcher.publishes(0.5)] == [b"online"]
    await watcher.disconnect()


async def test_a_command_result_with_an_overlong_req_id_is_refused_on_the_errors_topic(
    server: Server, alice: Api, raws: Callable[[], RawSession]
) -> None:
    device, me, _key, raw = await device_session(alice, raws, server.mqtt_port)
    assert await raw.subscribe(f"devices/{me}/errors", 1) == 1
    topic = f"devices/{me}/commands/res/{'x' * 41}"
    await raw.publish(topic, b'{"status":"ok"}', qos=1)
    await raw.expect(PUBACK)
    error = await raw.next_publish(5)
    assert error is not None and error.topic == f"devices/{me}/errors"
    assert json.loads(error.payload)["code"] == "command_not_found"
    await raw.ack(error.packet_id)
    await raw.ping()
    status, body = await alice.call("GET", f"/gateway/devices/{device['id']}/commands/{'y' * 33}")
    assert status == 404, body
    await raw.disconnect()


# --- WebSocket ------------------------------------------------------------------------------------


async def test_a_device_over_websocket_meets_the_same_broker(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    """MQTT over WebSocket (subprotocol "mqtt") is the same door: credentials, ACL, telemetry
    committed before its PUBACK, a command answered while its caller waits, presence."""
    device, key = await alice.claimed_device()
    me, path = device["username"], f"/gateway/devices/{device['id']}"
    assert await clients(transport="websockets").connect(server.ws_port, me, "wrong-key") == 0x87  # paho: rc 5
    ws = clients(transport="websockets")
    assert await ws.connect(server.ws_port, me, key) == 0
    assert await ws.subscribe(f"devices/{me}/commands/req/+") == 1
    assert await ws.subscribe("devices/+/telemetry") == 0x80
    assert await ws.publish(f"devices/{me}/telemetry", json.dumps({"t": 21.5}))
    status, history = await alice.call("GET", f"{path}/telemetry")
    assert status == 200 and [s["payload"] for s in history["results"]] == [{"t": 21.5}], history
    assert await eventually(lambda: online(alice, device["id"], True))

    post = asyncio.create_task(alice.call("POST", f"{path}/commands", {"command": {"op": "ping"}, "timeout": 5}))
    msg = await ws.receive(5)
    req_id = msg.topic.rsplit("/", 1)[1]
    assert msg.topic == f"devices/{me}/commands/req/{req_id}" and json.loads(msg.payload) == {"op": "ping"}
    assert await ws.publish(f"devices/{me}/commands/res/{req_id}", json.dumps({"status": "ok"}))
    status, body = await asyncio.wait_for(post, 5)
    assert (status, body["status"], body["result"]) == (200, "ok", {"status": "ok"}), body

    await ws.disconnect()
    assert await eventually(lambda: online(alice, device["id"], False))


async def online(api: Api, device_id: int, expected: bool) -> bool:
    status, body = await api.call("GET", f"/gateway/devices/{device_id}")
    assert status == 200, body
    return body["online"] is expected
