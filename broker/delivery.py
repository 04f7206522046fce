"""Outgoing delivery for one session: a bounded queue, a window of in-flight QoS 1/2 messages,
and re-sending of unacknowledged messages when the client comes back."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from broker import codec, metrics

log = logging.getLogger(__name__)

Send = Callable[[bytes], Awaitable[None]]


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    packet_id: int | None = None
    released: bool = False  # QoS 2: PUBREC received and PUBREL sent, waiting for PUBCOMP
    sent: bool = False
    store_id: int | None = None  # row in the session store (persistent sessions, QoS 1/2)

    @property
    def size(self) -> int:
        return len(self.topic) + len(self.payload)


class Outbox:
    """Unlike amqtt 0.12.1's per-delivery `mqtt_publish` tasks, which drop a QoS 1 message after a
    fixed 5 s PUBACK wait (issue 391) and have no bound, a message stays in flight until it is
    acknowledged or the session ends, and the queue is bounded."""

    def __init__(
        self,
        client_id: str,
        *,
        max_queued: int,
        max_inflight: int,
        on_overflow: Callable[[Outbox], None],
        on_acked: Callable[[Outgoing], None],
        max_queued_bytes: int = 1 << 62,
    ) -> None:
        self.client_id = client_id
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.bytes = 0  # queued and in flight
        self.max_inflight = max_inflight
        self.queue: deque[Outgoing] = deque()
        self.inflight: dict[int, Outgoing] = {}
        self._on_overflow = on_overflow
        self._on_acked = on_acked
        self._send: Send | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.queue) + len(self.inflight)

    @property
    def connected(self) -> bool:
        return self._send is not None

    def put(self, msg: Outgoing) -> bool:
        """Queue a message; False if it was refused because the queue is full (in messages or bytes)."""
        over_bytes = self.queue and self.bytes + msg.size > self.max_queued_bytes
        if len(self.queue) >= self.max_queued or over_bytes:
            if msg.qos == 0:
                metrics.messages_dropped.inc()
                return False
            metrics.messages_dropped.inc()
            self._on_overflow(self)
            return False
        self.queue.append(msg)
        self.bytes += msg.size
        self._wake.set()
        return True

    def withdraw(self, topic: str) -> list[Outgoing]:
        """Take the messages on `topic` out: queued ones, and QoS 1 ones sent but not acknowledged (they
        would be sent again on reconnect; a late PUBACK for one is ignored). Returns them."""
        taken = [m for m in self.queue if m.topic == topic]
        if taken:
            self.queue = deque(m for m in self.queue if m.topic != topic)
        for packet_id, msg in list(self.inflight.items()):
            if msg.topic == topic and msg.qos == 1:
                del self.inflight[packet_id]
                taken.append(msg)
        self.bytes -= sum(m.size for m in taken)
        return taken

    def attach(self, send: Send) -> None:
        """The client is connected: re-send what is in flight (DUP), then drain the queue."""
        self.detach()
        self._send = send
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"gatehouse.outbox:{self.client_id}")

    def detach(self) -> None:
        self._send = None
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    def discard_qos0(self) -> None:
        """An offline session keeps only QoS 1/2 messages [MQTT-3.1.2-5]."""
        self.queue = deque(m for m in self.queue if m.qos > 0)
        self.bytes = sum(m.size for m in self.queue) + sum(m.size for m in self.inflight.values())

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.inflight:
                return self._next_id
        raise RuntimeError("no free packet id")

    async def _run(self) -> None:
        send = self._send
        if send is None:
            return
        try:
            for msg in list(self.inflight.values()):
                await self._transmit(send, msg, dup=True)
            while True:
                while self.queue and len(self.inflight) < self.max_inflight:
                    msg = self.queue.popleft()
                    if msg.qos == 0:
                        self.bytes -= msg.size
                    else:
                        msg.packet_id = self._packet_id()
                        self.inflight[msg.packet_id] = msg
                    await self._transmit(send, msg, dup=False)
                self._wake.clear()
                await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection went away; in-flight messages wait for the next one
            log.debug("outbox %s stopped: %r", self.client_id, exc)
            self._send = None

    async def _transmit(self, send: Send, msg: Outgoing, *, dup: bool) -> None:
        if msg.released and msg.packet_id is not None:
            await send(codec.ack(codec.PUBREL, msg.packet_id))
            return
        await send(codec.publish(msg.topic, msg.payload, msg.qos, msg.retain, msg.packet_id, dup and msg.sent))
        msg.sent = True
        metrics.messages_out.inc()

    def on_puback(self, packet_id: int) -> bool:
        msg = self.inflight.get(packet_id)
        if msg is None or msg.qos != 1:
            return False
        del self.inflight[packet_id]
        self._acked(msg)
        return True

    def on_pubrec(self, packet_id: int) -> bool:
        """True: answer with PUBREL (the message is released, waiting for PUBCOMP)."""
        msg = self.inflight.get(packet_id)
        if msg is None or msg.qos != 2:
            return False
        msg.released = True
        return True

    def on_pubcomp(self, packet_id: int) -> bool:
        msg = self.inflight.get(packet_id)
        if msg is None or msg.qos != 2:
            return False
        del self.inflight[packet_id]
        self._acked(msg)
        return True

    def _acked(self, msg: Outgoing) -> None:
        self.bytes -= msg.size
        self._on_acked(msg)
        self._wake.set()
