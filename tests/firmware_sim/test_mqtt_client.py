"""firmware_sim.mqtt.MqttClient against a bare in-process amqtt broker."""

from __future__ import annotations

import asyncio
import socket

import pytest
from amqtt.broker import Broker

from firmware_sim.mqtt import ConnectionClosed, ConnectRefused, MqttClient, encode_remaining_length


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start_broker(allow_anonymous: bool = True) -> tuple[Broker, int]:
    port = _free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": allow_anonymous}},
        }
    )
    await broker.start()
    return broker, port


@pytest.fixture
async def broker_port():
    broker, port = await _start_broker()
    yield port
    await broker.shutdown()


def test_remaining_length_encoding():
    assert encode_remaining_length(0) == b"\x00"
    assert encode_remaining_length(127) == b"\x7f"
    assert encode_remaining_length(128) == b"\x80\x01"
    assert encode_remaining_length(16_383) == b"\xff\x7f"
    assert encode_remaining_length(16_384) == b"\x80\x80\x01"
    assert encode_remaining_length(268_435_455) == b"\xff\xff\xff\x7f"


async def test_connect_subscribe_publish_roundtrip_disconnect(broker_port):
    sub, pub = MqttClient(), MqttClient()
    assert await sub.connect("127.0.0.1", broker_port, client_id="t-sub") == 0
    assert await pub.connect("127.0.0.1", broker_port, client_id="t-pub", keepalive=30) == 0

    assert await sub.subscribe("dev/+/telemetry", qos=1) == 1
    assert await sub.subscribe("dev/+/state", qos=0) == 0
    assert await sub.subscribe("bad/#/filter", qos=1) == 0x80  # '#' not last: refused

    await pub.publish("dev/7/telemetry", b'{"t": 1, "v": 1.5}', qos=1)
    assert await asyncio.wait_for(sub.messages.get(), 5) == ("dev/7/telemetry", b'{"t": 1, "v": 1.5}')

    # many QoS 1 publishes in flight at once, plus a payload that needs a 3-byte length and several reads
    big = bytes(range(256)) * 1000
    await asyncio.gather(
        *(pub.publish(f"dev/{i}/telemetry", str(i).encode(), qos=1) for i in range(50)),
        pub.publish("dev/big/state", big, qos=0),
    )
    got = [await asyncio.wait_for(sub.messages.get(), 5) for _ in range(51)]
    assert ("dev/big/state", big) in got
    assert {t for t, _ in got} == {f"dev/{i}/telemetry" for i in range(50)} | {"dev/big/state"}

    await pub.disconnect()
    await sub.disconnect()
    assert await asyncio.wait_for(sub.closed, 1) is None
    assert await asyncio.wait_for(pub.closed, 1) is None
    with pytest.raises(ConnectionClosed):
        await pub.publish("dev/7/telemetry", b"x")


async def test_connect_refused_raises():
    broker, port = await _start_broker(allow_anonymous=False)
    try:
        client = MqttClient()
        with pytest.raises(ConnectRefused) as info:
            await client.connect("127.0.0.1", port, client_id="anon")
        assert info.value.rc != 0
        assert isinstance(client.closed.result(), ConnectRefused)
    finally:
        await broker.shutdown()


async def test_auto_ping_keeps_connection(broker_port):
    client = MqttClient(auto_ping=True)
    await client.connect("127.0.0.1", broker_port, client_id="pinger", keepalive=1)
    await asyncio.sleep(2.2)  # several PINGREQ/PINGRESP rounds; a missing PINGRESP would close it
    assert client.connected and not client.closed.done()
    await client.disconnect()
