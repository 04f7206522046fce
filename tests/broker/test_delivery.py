"""broker.delivery.Outbox on its own: a fake `send` collects the packets it writes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from broker import codec
from broker.delivery import Outbox, Outgoing
from tests.raw import PUBLISH, Packet, parse_publish


class Wire:
    """A fake connection: what the outbox sent, in order (each write is one whole packet)."""

    def __init__(self) -> None:
        self.packets: list[Packet] = []

    async def send(self, data: bytes) -> None:
        kind, flags, body = await codec.read_frame(_Bytes(data), 1 << 20) or (0, 0, b"")
        self.packets.append(Packet(kind, flags, body))

    @property
    def publishes(self) -> list[tuple[str, bytes, int, int | None, bool]]:
        """(topic, payload, qos, packet id, dup) of each PUBLISH sent."""
        return [
            (p.topic, p.payload, p.qos, p.packet_id, p.dup)
            for p in map(parse_publish, (p for p in self.packets if p.kind == PUBLISH))
        ]


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def readexactly(self, n: int) -> bytes:
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


class Box:
    """An Outbox and what its callbacks saw."""

    def __init__(self, *, max_queued: int = 10, max_inflight: int = 10) -> None:
        self.overflows: list[Outbox] = []
        self.acked: list[Outgoing] = []
        self.outbox = Outbox(
            "c1",
            max_queued=max_queued,
            max_inflight=max_inflight,
            on_overflow=self.overflows.append,
            on_acked=self.acked.append,
        )


async def settle() -> None:
    """Let the outbox task run until it has nothing left to do."""
    for _ in range(20):
        await asyncio.sleep(0)


def msg(n: int, qos: int = 1) -> Outgoing:
    return Outgoing(f"t/{n}", f"m{n}".encode(), qos)


def dropped() -> float:
    return REGISTRY.get_sample_value("gatehouse_mqtt_messages_dropped_total") or 0.0


def sent_out() -> float:
    return REGISTRY.get_sample_value("gatehouse_mqtt_messages_out_total") or 0.0


@pytest.fixture
async def cleanup() -> Any:
    boxes: list[Outbox] = []
    yield boxes.append
    for box in boxes:
        box.detach()
    await settle()


async def test_queue_bound_drops_qos0_and_reports_qos1_overflow() -> None:
    b = Box(max_queued=2)
    box = b.outbox
    before = dropped()
    assert box.put(msg(1))
    assert box.put(msg(2, qos=0))
    assert not box.put(msg(3, qos=0))  # full: a QoS 0 message is dropped, quietly
    assert b.overflows == []
    assert not box.put(msg(4, qos=1))  # full: a QoS 1 message is refused and the owner told
    assert b.overflows == [box]
    assert not box.put(msg(5, qos=2))
    assert b.overflows == [box, box]
    assert [m.topic for m in box.queue] == ["t/1", "t/2"]
    assert len(box) == 2
    assert dropped() - before == 3


async def test_queue_bound_counts_queued_not_in_flight(cleanup: Any) -> None:
    # In-flight messages left the queue: the queue bound applies to what waits behind them.
    b = Box(max_queued=2, max_inflight=1)
    box = b.outbox
    cleanup(box)
    wire = Wire()
    box.attach(wire.send)
    for n in range(3):
        assert box.put(msg(n))
        await settle()
    assert list(box.inflight) == [1]
    assert len(box.queue) == 2
    assert len(box) == 3
    assert not box.put(msg(9))
    assert b.overflows == [box]


async def test_qos0_sent_without_packet_id_and_not_held(cleanup: Any) -> None:
    b = Box(max_inflight=1)
    box = b.outbox
    cleanup(box)
    wire = Wire()
    before = sent_out()
    box.attach(wire.send)
    for n in range(3):
        box.put(msg(n, qos=0))
    await settle()
    assert wire.publishes == [(f"t/{n}", f"m{n}".encode(), 0, None, False) for n in range(3)]
    assert box.inflight == {}
    assert len(box) == 0
    assert sent_out() - before == 3


async def test_inflight_window_and_puback(cleanup: Any) -> None:
    b = Box(max_inflight=2)
    box = b.outbox
    cleanup(box)
    wire = Wire()
    box.attach(wire.send)
    sent = [msg(n) for n in range(4)]
    for m in sent:
        assert box.put(m)
    await settle()
    # Only the window's worth is sent; the rest waits, in order.
    assert wire.publishes == [("t/0", b"m0", 1, 1, False), ("t/1", b"m1", 1, 2, False)]
    assert list(box.inflight) == [1, 2]
    assert [m.topic for m in box.queue] == ["t/2", "t/3"]

    assert box.on_puback(1)
    assert b.acked == [sent[0]]
    await settle()
    assert len(wire.publishes) == 3
    topic, _, _, pid, dup = wire.publishes[2]
    assert (topic, dup) == ("t/2", False)
    assert pid not in (None, 2)
    assert set(box.inflight) == {2, pid}

    assert not box.on_puback(1)  # already acknowledged: unknown now
    assert not box.on_puback(999)
    assert b.acked == [sent[0]]
    assert box.on_puback(2)
    assert box.on_puback(pid)
    await settle()
    assert [p[0] for p in wire.publishes] == ["t/0", "t/1", "t/2", "t/3"]
    assert b.acked == sent[:3]


async def test_qos2_pubrec_then_pubcomp(cleanup: Any) -> None:
    b = Box(max_inflight=1)
    box = b.outbox
    cleanup(box)
    wire = Wire()
    box.attach(wire.send)
    two = msg(1, qos=2)
    box.put(two)
    box.put(msg(2, qos=1))
    await settle()
    assert wire.publishes == [("t/1", b"m1", 2, 1, False)]

    assert not box.on_puback(1)  # a PUBACK does not complete a QoS 2 message
    assert box.on_pubcomp(7) is False
    assert not box.on_pubrec(7)
    assert list(box.inflight) == [1]

    assert box.on_pubrec(1)  # answer with PUBREL
    assert two.released
    assert b.acked == []
    await settle()
    assert len(wire.publishes) == 1  # still holds the window until PUBCOMP

    assert box.on_pubcomp(1)
    assert b.acked == [two]
    await settle()
    assert [p[0] for p in wire.publishes] == ["t/1", "t/2"]
    assert not box.on_pubcomp(1)


async def test_qos1_ack_packets_do_not_complete_other_qos(cleanup: Any) -> None:
    b = Box()
    box = b.outbox
    cleanup(box)
    wire = Wire()
    box.attach(wire.send)
    box.put(msg(1, qos=1))
    await settle()
    assert not box.on_pubrec(1)
    assert not box.on_pubcomp(1)
    assert list(box.inflight) == [1]
    assert box.on_puback(1)


async def test_reattach_resends_in_flight_with_dup_then_the_queue(cleanup: Any) -> None:
    b = Box(max_inflight=4)
    box = b.outbox
    cleanup(box)
    first = Wire()
    box.attach(first.send)
    one, two, three = msg(1), msg(2, qos=2), msg(3)
    for m in (one, two, three):
        box.put(m)
    await settle()
    assert [p[3] for p in first.publishes] == [1, 2, 3]
    assert box.on_puback(3)
    assert box.on_pubrec(2)  # QoS 2 message released: PUBREL is what is owed now
    box.detach()
    assert not box.connected

    box.put(msg(4))  # arrives while the client is away
    box.put(msg(5, qos=0))
    await settle()
    assert len(first.publishes) == 3

    second = Wire()
    box.attach(second.send)
    assert box.connected
    await settle()
    kinds = [p.kind for p in second.packets]
    assert kinds == [codec.PUBLISH, codec.PUBREL, codec.PUBLISH, codec.PUBLISH]
    assert second.publishes[0] == ("t/1", b"m1", 1, 1, True)  # same packet id, DUP set
    assert second.packets[1].body == (2).to_bytes(2, "big")
    topic, _, qos, pid, dup = second.publishes[1]
    assert (topic, qos, dup) == ("t/4", 1, False)
    assert pid not in (1, 2)
    assert second.publishes[2] == ("t/5", b"m5", 0, None, False)
    assert box.on_puback(1)
    assert box.on_pubcomp(2)
    assert box.on_puback(pid)
    assert [m.topic for m in b.acked] == ["t/3", "t/1", "t/2", "t/4"]
    assert b.acked[:3] == [three, one, two]
    assert box.inflight == {}


async def test_attach_replaces_the_previous_connection(cleanup: Any) -> None:
    b = Box()
    box = b.outbox
    cleanup(box)
    old, new = Wire(), Wire()
    box.attach(old.send)
    box.attach(new.send)
    box.put(msg(1))
    await settle()
    assert old.packets == []
    assert [p[0] for p in new.publishes] == ["t/1"]


async def test_unsent_in_flight_message_is_not_marked_dup(cleanup: Any) -> None:
    # A message that took its packet id but whose send failed was never seen by the client.
    b = Box()
    box = b.outbox
    cleanup(box)

    async def broken(packet: Any) -> None:
        raise ConnectionResetError

    box.attach(broken)
    box.put(msg(1))
    await settle()
    assert list(box.inflight) == [1]
    wire = Wire()
    box.attach(wire.send)
    await settle()
    assert wire.publishes == [("t/1", b"m1", 1, 1, False)]


async def test_discard_qos0_keeps_qos1_and_2_in_order() -> None:
    b = Box()
    box = b.outbox
    for n, qos in enumerate((0, 1, 0, 2, 1, 0)):
        box.put(msg(n, qos=qos))
    box.discard_qos0()
    assert [(m.topic, m.qos) for m in box.queue] == [("t/1", 1), ("t/3", 2), ("t/4", 1)]
    assert len(box) == 3


async def test_packet_ids_skip_ids_in_flight_and_wrap(cleanup: Any) -> None:
    b = Box(max_inflight=3)
    box = b.outbox
    cleanup(box)
    wire = Wire()
    box.attach(wire.send)
    for n in range(3):
        box.put(msg(n))
    await settle()
    assert list(box.inflight) == [1, 2, 3]
    assert box.on_puback(2)
    assert box.on_puback(3)
    await settle()
    # Just before the wrap: the next ids are 65535, then 1 (still in flight, skipped), then 2.
    box._next_id = 65534
    box.put(msg(10))
    box.put(msg(11))
    await settle()
    ids = [p[3] for p in wire.publishes]
    assert ids[3:] == [65535, 2]
    assert 0 not in ids
    assert set(box.inflight) == {1, 65535, 2}
