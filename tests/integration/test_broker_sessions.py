"""Sessions and delivery against a real server: session present, offline queues (also across a
restart), redelivery of unacknowledged messages, the in-flight window, delivery QoS and retained
messages. Anonymous clients on servers started with `broker.allow_anonymous`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.mqtt import Client
from tests.raw import PUBCOMP, PUBREC, PUBREL, RawSession
from tests.support import Server, make_server

# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def window_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One QoS 1/2 message in flight per client; restarted by the restart test."""
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-window"),
        GATEHOUSE_BROKER__ALLOW_ANONYMOUS="true",
        GATEHOUSE_BROKER__MAX_INFLIGHT_MESSAGES="1",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


def new_topic(leaf: str = "m") -> str:
    return f"test/{uuid.uuid4().hex}/{leaf}"


def new_id(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def publisher(make: Callable[..., Client], port: int) -> Client:
    pub = make()
    assert await pub.connect(port) == 0
    return pub


async def forget_session(port: int, client_id: str) -> None:
    """Connect once with clean_session=1 so a persistent session does not outlive its test."""
    raw = RawSession()
    try:
        await raw.connect(port, client_id, clean=True)
        await raw.disconnect()
    finally:
        raw.close()


# --- 1. session present -----------------------------------------------------------------------------


async def test_session_present_flag(
    anon_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port, cid, topic = anon_server.mqtt_port, new_id(), new_topic()

    first = raws()
    assert await first.connect(port, cid, clean=False) == (0, 0)
    assert await first.subscribe(topic, 1) == 1
    await first.disconnect(wait=5)

    again = raws()
    assert await again.connect(port, cid, clean=False) == (1, 0)
    await again.disconnect(wait=5)

    clean = raws()
    assert await clean.connect(port, cid, clean=True) == (0, 0)
    # The server closes the connection after the session registry has ended the clean session.
    await clean.disconnect(wait=5)

    # The clean session ended the stored one: a persistent session starts afresh, without the
    # old subscription.
    fresh = raws()
    assert await fresh.connect(port, cid, clean=False) == (0, 0)
    pub = await publisher(clients, port)
    assert await pub.publish(topic, b"after-clean")
    assert await fresh.publishes(0.5) == []
    await fresh.disconnect()
    await forget_session(port, cid)


async def test_persistent_connect_right_after_a_clean_session_starts_fresh(
    anon_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    # As above without the pause: however soon the persistent CONNECT follows the end of a clean
    # session, it gets a new persistent session (session present 0) that keeps what it is owed.
    port = anon_server.mqtt_port
    pub = await publisher(clients, port)
    results = []
    for _ in range(2):
        cid, topic = new_id(), new_topic()
        clean = raws()
        assert await clean.connect(port, cid, clean=True) == (0, 0)
        await clean.disconnect()
        fresh = raws()
        present, rc = await fresh.connect(port, cid, clean=False)
        assert rc == 0
        assert await fresh.subscribe(topic, 1) == 1
        await fresh.disconnect(wait=5)
        assert await pub.publish(topic, b"while-away", qos=1)
        back = raws()
        back_present, _ = await back.connect(port, cid, clean=False)
        msg = await back.next_publish(1)
        results.append((present, back_present, msg.payload if msg else None))
        if msg is not None:
            await back.ack(msg.packet_id)
        await back.disconnect()
        await forget_session(port, cid)
    assert results == [(0, 1, b"while-away")] * 2


# --- 2. offline queueing ----------------------------------------------------------------------------


async def test_offline_messages_queued_qos1_only_in_order(anon_server: Server, clients: Callable[..., Client]) -> None:
    port, cid, topic = anon_server.mqtt_port, new_id(), new_topic()
    sub = clients(cid, clean_session=False)
    assert await sub.connect(port) == 0
    assert await sub.subscribe(topic, 1) == 1
    await sub.disconnect()

    pub = await publisher(clients, port)
    for n in range(3):
        assert await pub.publish(topic, f"q1-{n}".encode(), qos=1)
    assert await pub.publish(topic, b"q0", qos=0)
    assert await pub.publish(topic, b"q1-3", qos=1)

    back = clients(cid, clean_session=False)
    assert await back.connect(port) == 0  # no SUBSCRIBE: the session's subscription still holds
    got = [await back.receive_on(topic) for _ in range(4)]
    assert [(m.payload, m.qos) for m in got] == [(f"q1-{n}".encode(), 1) for n in range(4)]
    assert await back.nothing(0.5) == []
    back.close()
    await forget_session(port, cid)


# --- 3. persistent sessions survive a restart --------------------------------------------------------


async def test_persistent_session_survives_restart(
    window_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port, cid, topic = window_server.mqtt_port, new_id(), new_topic()
    sub = raws()
    assert await sub.connect(port, cid, clean=False) == (0, 0)
    assert await sub.subscribe(topic, 1) == 1
    await sub.disconnect(wait=5)

    pub = await publisher(clients, port)
    for n in range(3):
        assert await pub.publish(topic, f"q1-{n}".encode(), qos=1)
    assert await pub.publish(topic, b"q0", qos=0)
    pub.close()

    assert window_server.stop() == 0  # SIGTERM: a clean shutdown
    window_server.start()

    back = raws()
    assert await back.connect(port, cid, clean=False) == (1, 0)
    got = []
    for _ in range(3):
        msg = await back.next_publish(5)
        assert msg is not None, f"queued messages lost in the restart; got {got}"
        got.append(msg)
        await back.ack(msg.packet_id)
    assert [(m.topic, m.payload, m.qos) for m in got] == [(topic, f"q1-{n}".encode(), 1) for n in range(3)]

    # The subscription came back too: a new publish arrives without a new SUBSCRIBE.
    pub2 = await publisher(clients, port)
    assert await pub2.publish(topic, b"after-restart", qos=1)
    msg = await back.next_publish(5)
    assert msg is not None and (msg.payload, msg.qos) == (b"after-restart", 1)
    await back.ack(msg.packet_id)
    assert await back.publishes(0.3) == []  # the QoS 0 message was not kept
    await back.disconnect()
    pub2.close()

    # Acknowledged messages are gone for good, also from disk.
    assert window_server.stop() == 0  # SIGTERM: a clean shutdown
    window_server.start()
    last = raws()
    assert await last.connect(port, cid, clean=False) == (1, 0)
    assert await last.publishes(0.7) == []
    await last.disconnect()


# --- 4. redelivery of unacknowledged messages -----------------------------------------------------------


async def test_unacked_qos1_redelivered_with_dup_on_reconnect(
    anon_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port, cid, topic = anon_server.mqtt_port, new_id(), new_topic()
    sub = raws()
    assert await sub.connect(port, cid, clean=False) == (0, 0)
    assert await sub.subscribe(topic, 1) == 1
    pub = await publisher(clients, port)
    assert await pub.publish(topic, b"once", qos=1)
    first = await sub.next_publish()
    assert first is not None and (first.payload, first.qos, first.dup) == (b"once", 1, False)
    await sub.disconnect(wait=5)  # without PUBACK

    again = raws()
    assert await again.connect(port, cid, clean=False) == (1, 0)
    dup = await again.next_publish()
    assert dup is not None, "the unacknowledged message was not sent again"
    assert (dup.topic, dup.payload, dup.qos, dup.dup, dup.packet_id) == (topic, b"once", 1, True, first.packet_id)
    await again.ack(dup.packet_id)
    await again.ping()
    await again.disconnect(wait=5)

    last = raws()
    assert await last.connect(port, cid, clean=False) == (1, 0)
    assert await last.publishes(0.7) == []
    await last.disconnect()
    await forget_session(port, cid)


async def test_qos2_redelivery_publish_then_pubrel(
    anon_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    # [MQTT-4.4.0-1] a QoS 2 message not yet PUBRECed is re-sent as PUBLISH (DUP); once PUBRECed,
    # what is owed is the PUBREL.
    port, cid, topic = anon_server.mqtt_port, new_id(), new_topic()
    sub = raws()
    assert await sub.connect(port, cid, clean=False) == (0, 0)
    assert await sub.subscribe(topic, 2) == 2
    pub = await publisher(clients, port)
    assert await pub.publish(topic, b"exactly-once", qos=2)
    first = await sub.next_publish()
    assert first is not None and (first.payload, first.qos) == (b"exactly-once", 2)
    await sub.disconnect(wait=5)

    second = raws()
    assert await second.connect(port, cid, clean=False) == (1, 0)
    dup = await second.next_publish()
    assert dup is not None and (dup.payload, dup.qos, dup.dup, dup.packet_id) == (
        b"exactly-once",
        2,
        True,
        first.packet_id,
    )
    await second.ack(dup.packet_id, PUBREC)
    pubrel = await second.expect(PUBREL)
    assert int.from_bytes(pubrel.body[:2], "big") == first.packet_id
    await second.disconnect(wait=5)  # without PUBCOMP

    third = raws()
    assert await third.connect(port, cid, clean=False) == (1, 0)
    pubrel = await third.expect(PUBREL)
    assert int.from_bytes(pubrel.body[:2], "big") == first.packet_id
    assert await third.publishes(0.3) == []  # not the PUBLISH again
    await third.ack(first.packet_id, PUBCOMP)
    await third.ping()
    await third.disconnect(wait=5)

    last = raws()
    assert await last.connect(port, cid, clean=False) == (1, 0)
    assert await last.read(0.7) is None
    await last.disconnect()
    await forget_session(port, cid)


# --- 5. no 5 s give-up (amqtt issue 391), the in-flight window ------------------------------------------


async def test_late_puback_accepted_and_frees_the_window(
    window_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    # amqtt 0.12.1 gives up on an outgoing QoS 1 message after 5 s without PUBACK. Here it stays
    # in flight: with a window of 1, the next message waits until the (late) PUBACK comes.
    port, topic = window_server.mqtt_port, new_topic()
    sub = raws()
    assert await sub.connect(port, new_id(), clean=True) == (0, 0)
    assert await sub.subscribe(topic, 1) == 1
    pub = await publisher(clients, port)
    assert await pub.publish(topic, b"first", qos=1)
    first = await sub.next_publish()
    assert first is not None and first.payload == b"first"
    assert await pub.publish(topic, b"second", qos=1)

    meanwhile = await sub.publishes(6.5)
    # Re-sending the first (DUP) on the same connection would be allowed; the second is not due.
    assert all((m.payload, m.dup, m.packet_id) == (b"first", True, first.packet_id) for m in meanwhile), meanwhile
    await sub.ping()  # still connected

    await sub.ack(first.packet_id)
    second = await sub.next_publish(3)
    assert second is not None and (second.payload, second.dup) == (b"second", False)
    await sub.ack(second.packet_id)
    assert await pub.publish(topic, b"third", qos=1)
    third = await sub.next_publish(3)
    assert third is not None and third.payload == b"third"
    await sub.ack(third.packet_id)
    await sub.ping()


async def test_inflight_window_of_one(
    window_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port, topic = window_server.mqtt_port, new_topic()
    sub = raws()
    assert await sub.connect(port, new_id(), clean=True) == (0, 0)
    assert await sub.subscribe(topic, 1) == 1
    pub = await publisher(clients, port)
    for n in range(3):
        assert await pub.publish(topic, f"m{n}".encode(), qos=1)
    for n in range(3):
        msg = await sub.next_publish(3)
        assert msg is not None and msg.payload == f"m{n}".encode()
        assert await sub.publishes(0.4) == [], "a second message was sent before the first was acknowledged"
        await sub.ack(msg.packet_id)


async def test_qos0_not_held_by_the_window(
    window_server: Server, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    # A QoS 0 subscription is not acknowledged, so the in-flight window never applies to it.
    port, topic = window_server.mqtt_port, new_topic()
    sub = raws()
    assert await sub.connect(port, new_id(), clean=True) == (0, 0)
    assert await sub.subscribe(topic, 0) == 0
    pub = await publisher(clients, port)
    for n in range(5):
        assert await pub.publish(topic, f"m{n}".encode(), qos=1)
    got = [await sub.next_publish(3) for _ in range(5)]
    assert [(m.payload, m.qos) for m in got if m is not None] == [(f"m{n}".encode(), 0) for n in range(5)]


# --- 6. delivery QoS -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub_qos", "pub_qos", "expected"),
    [(1, 0, 0), (0, 1, 0), (2, 1, 1), (1, 2, 1), (2, 2, 2), (0, 2, 0), (2, 0, 0)],
)
async def test_delivery_qos_is_the_lower_of_publish_and_subscription(
    anon_server: Server, clients: Callable[..., Client], sub_qos: int, pub_qos: int, expected: int
) -> None:
    port, topic = anon_server.mqtt_port, new_topic()
    sub = clients()
    assert await sub.connect(port) == 0
    assert await sub.subscribe(topic, sub_qos) == sub_qos
    pub = await publisher(clients, port)
    assert await pub.publish(topic, b"x", qos=pub_qos)
    msg = await sub.receive_on(topic)
    assert (msg.payload, msg.qos, msg.retain) == (b"x", expected, False)


async def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(
    anon_server: Server, clients: Callable[..., Client]
) -> None:
    # MQTT 3.1.1 §3.3.5: one message, at the maximum QoS of the matching subscriptions.
    port = anon_server.mqtt_port
    base = f"test/{uuid.uuid4().hex}"
    sub = clients()
    assert await sub.connect(port) == 0
    assert await sub.subscribe(f"{base}/#", 0) == 0
    assert await sub.subscribe(f"{base}/+", 1) == 1
    assert await sub.subscribe(f"{base}/a", 0) == 0
    pub = await publisher(clients, port)
    assert await pub.publish(f"{base}/a", b"one", qos=2)
    msg = await sub.receive_on(f"{base}/a")
    assert (msg.payload, msg.qos) == (b"one", 1)
    assert await sub.nothing(0.5) == []


# --- 7. retained messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("retained_qos", "sub_qos", "expected"), [(1, 0, 0), (1, 2, 1), (0, 1, 0), (2, 2, 2)])
async def test_retained_sent_on_subscribe_with_retain_flag_at_min_qos(
    anon_server: Server, clients: Callable[..., Client], retained_qos: int, sub_qos: int, expected: int
) -> None:
    port, topic = anon_server.mqtt_port, new_topic("r")
    pub = await publisher(clients, port)
    live = clients()
    assert await live.connect(port) == 0
    assert await live.subscribe(topic, 2) == 2
    assert await pub.publish(topic, b"kept", qos=retained_qos, retain=True)
    # [MQTT-3.3.1-9] a subscriber already there gets it as a live message: retain flag 0.
    now = await live.receive_on(topic)
    assert (now.payload, now.retain) == (b"kept", False)

    late = clients()
    assert await late.connect(port) == 0
    assert await late.subscribe(topic, sub_qos) == sub_qos
    msg = await late.receive_on(topic)
    assert (msg.payload, msg.qos, msg.retain) == (b"kept", expected, True)
    assert await late.nothing(0.3) == []
    assert await pub.publish(topic, b"", qos=0, retain=True)  # clear it
