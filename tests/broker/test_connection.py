"""The connection loop over in-memory streams: arrival order, strict decoding, every exit closes."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from broker.server import Limits
from tests.broker.memory import running
from tests.raw import (
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    SUBACK,
    connect_packet,
    packet,
    utf8,
)


def subscribe(topic_filter: str, qos: int, pid: int = 1) -> bytes:
    return packet(0x82, pid.to_bytes(2, "big") + utf8(topic_filter) + bytes([qos]))


def publish(topic: str | bytes, payload: bytes, qos: int = 0, pid: int = 7) -> bytes:
    body = utf8(topic) + (pid.to_bytes(2, "big") if qos else b"") + payload
    return packet(0x30 | (qos << 1), body)


def malformed() -> float:
    return REGISTRY.get_sample_value("gatehouse_mqtt_malformed_packets_total") or 0.0


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_subscribe_then_publish_in_one_write_is_delivered(qos: int) -> None:
    async with running() as h:
        pipe = await h.connected("c1")
        for n in range(20):
            pipe.send(subscribe(f"t/{n}", qos, pid=n + 1) + publish(f"t/{n}", b"m%d" % n, qos, pid=n + 1))
            await pipe.expect(SUBACK)
            msg = await pipe.next_publish()
            assert (msg.topic, msg.payload, msg.qos) == (f"t/{n}", b"m%d" % n, qos)
            if qos:
                await pipe.expect(PUBACK if qos == 1 else PUBREC)  # for our publish, after handling it
            if qos == 2:
                pipe.send(packet(0x62, (n + 1).to_bytes(2, "big")))
                await pipe.expect(PUBCOMP)
            if msg.packet_id:
                pipe.send(packet((PUBACK if qos == 1 else PUBREC) << 4, msg.packet_id.to_bytes(2, "big")))
            if qos == 2:
                await pipe.expect(PUBREL)
                pipe.send(packet(PUBCOMP << 4, (msg.packet_id or 0).to_bytes(2, "big")))


async def test_publish_then_subscribe_is_not_delivered() -> None:
    async with running() as h:
        pipe = await h.connected("c1")
        pipe.send(publish("t/x", b"before", 1) + subscribe("t/x", 1) + b"\xc0\x00")
        await pipe.expect(PUBACK)
        await pipe.expect(SUBACK)
        await pipe.expect(PINGRESP)  # handled in order: nothing was delivered before it
        assert pipe.unread_publishes() == []


async def test_qos2_flow_and_duplicate_before_pubrel_handled_once() -> None:
    async with running() as h:
        sub = await h.connected("sub")
        sub.send(subscribe("q/2", 0))
        await sub.expect(SUBACK)
        pub = await h.connected("pub")
        pub.send(publish("q/2", b"once", 2, pid=5))
        assert (await pub.expect(PUBREC)).body == b"\x00\x05"
        dup = bytearray(publish("q/2", b"once", 2, pid=5))
        dup[0] |= 0x08
        pub.send(bytes(dup))
        assert (await pub.expect(PUBREC)).body == b"\x00\x05"
        pub.send(packet(0x62, b"\x00\x05"))
        assert (await pub.expect(PUBCOMP)).body == b"\x00\x05"
        pub.send(b"\xc0\x00")
        await pub.expect(PINGRESP)
        assert (await sub.next_publish()).payload == b"once"
        sub.send(b"\xc0\x00")
        await sub.expect(PINGRESP)
        assert sub.unread_publishes() == []  # delivered once


async def test_pubrel_for_an_unknown_packet_id_is_answered() -> None:
    async with running() as h:
        pipe = await h.connected("c1")
        pipe.send(packet(PUBREL << 4 | 2, b"\x00\x09"))
        assert (await pipe.expect(PUBCOMP)).body == b"\x00\x09"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(publish(b"t/\xff\xfe", b"x" + b"\xc0\x00"), id="invalid-utf8-topic"),
        pytest.param(publish(b"t/\x00", b"x"), id="nul-in-topic"),
        pytest.param(publish(b"t/+", b"x"), id="wildcard-topic"),
        pytest.param(publish(b"", b"x"), id="empty-topic"),
        pytest.param(packet(0x36, utf8("t") + b"\x00\x01x"), id="publish-qos3"),
        pytest.param(publish("t", b"x", 1, pid=0), id="publish-packet-id-0"),
        pytest.param(packet(0x80, b"\x00\x01" + utf8("t") + b"\x00"), id="subscribe-reserved-flags"),
        pytest.param(packet(0x82, b"\x00\x01"), id="subscribe-no-filter"),
        pytest.param(packet(0x82, b"\x00\x00" + utf8("t") + b"\x00"), id="subscribe-packet-id-0"),
        pytest.param(packet(0x82, b"\x00\x01" + utf8("t") + b"\x03"), id="subscribe-qos3"),
        pytest.param(packet(0x82, b"\x00\x01" + utf8(b"t\xc3") + b"\x00"), id="subscribe-invalid-utf8"),
        pytest.param(packet(0xA2, b"\x00\x01"), id="unsubscribe-no-filter"),
        pytest.param(packet(0x60, b"\x00\x01"), id="pubrel-flags"),
        pytest.param(packet(0x40, b"\x00\x00"), id="puback-packet-id-0"),
        pytest.param(b"\xc1\x00", id="pingreq-flags"),
        pytest.param(b"\x20\x02\x00\x00", id="connack-from-a-client"),
        pytest.param(b"\x00\x00", id="reserved-type-0"),
        pytest.param(b"\x30\xff\xff\xff\xff\x01", id="remaining-length-5-bytes"),
        pytest.param(connect_packet("again"), id="second-connect"),
    ],
)
async def test_a_malformed_packet_closes_the_connection_unanswered(bad: bytes) -> None:
    async with running() as h:
        pipe = await h.connected("c1")
        before = malformed()
        pipe.send(bad + b"\xc0\x00")  # a PINGREQ behind it is never read
        assert [p.kind for p in await pipe.ends()] == []
        if "again" not in repr(bad):
            assert malformed() - before == 1


@pytest.mark.parametrize(
    "connect",
    [
        pytest.param(connect_packet("c", will=("w", b"x", 3, False)), id="will-qos3"),
        pytest.param(connect_packet("c")[:9] + bytes([0x03]) + connect_packet("c")[10:], id="reserved-flag"),
        pytest.param(packet(0x10, utf8(b"MQ\xffT") + b"\x04\x02\x00\x3c" + utf8("c")), id="invalid-utf8-protocol"),
        pytest.param(packet(0x10, utf8("MQTT") + b"\x04\x42\x00\x3c" + utf8("c") + utf8("pw")), id="password-no-user"),
        pytest.param(packet(0x10, utf8("MQTT") + b"\x04\x02\x00\x3c" + utf8(b"c\x00")), id="nul-in-client-id"),
        pytest.param(b"\x30\x00", id="publish-before-connect"),
        pytest.param(connect_packet("c")[:8], id="cut-short"),
        pytest.param(b"", id="nothing"),
    ],
)
async def test_a_bad_connect_is_closed_without_connack(connect: bytes) -> None:
    async with running() as h:
        pipe = h.open()
        pipe.send(connect)
        pipe.to_broker.feed_eof()
        assert await pipe.ends() == []
        assert h.broker.connection_count == 0


async def test_no_connect_within_the_timeout_is_closed() -> None:
    async with running(Limits(connect_timeout=0.05)) as h:
        pipe = h.open()
        pipe.send(connect_packet("slow")[:5])
        assert await asyncio.wait_for(pipe.ends(), 5) == []
        assert pipe.closed


async def test_oversize_packet_closes() -> None:
    async with running(Limits(max_packet_size=100)) as h:
        pipe = await h.connected("c1")
        pipe.send(publish("t", b"x" * 200))
        assert await pipe.ends() == []


async def test_unsupported_protocol_level_gets_connack_1() -> None:
    async with running() as h:
        pipe = h.open()
        pipe.send(packet(0x10, utf8("MQTT") + b"\x05\x02\x00\x3c" + b"\x00" + utf8("c5")))
        assert [(p.kind, p.body) for p in await pipe.ends()] == [(2, b"\x00\x01")]


async def test_disconnect_ends_cleanly_and_a_dropped_socket_sends_the_will() -> None:
    async with running() as h:
        watcher = await h.connected("watcher")
        watcher.send(subscribe("wills/#", 0))
        await watcher.expect(SUBACK)
        polite = await h.connected("polite", will=("wills/polite", b"gone", 0, False))
        polite.send(b"\xe0\x00")
        assert await polite.ends() == []
        rude = await h.connected("rude", will=("wills/rude", b"gone", 0, False))
        rude.abort()
        msg = await watcher.next_publish()
        assert (msg.topic, msg.payload) == ("wills/rude", b"gone")
        assert h.broker.connection_count == 1
