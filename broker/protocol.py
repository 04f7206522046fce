"""Our amqtt protocol handler: keepalive enforced, QoS 1 PUBACK only once the message is handled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from amqtt.adapters import WriterAdapter
from amqtt.errors import MQTTError, NoDataError
from amqtt.mqtt import packet_class
from amqtt.mqtt.packet import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    RESERVED_0,
    RESERVED_15,
    SUBSCRIBE,
    UNSUBSCRIBE,
    MQTTFixedHeader,
    MQTTVariableHeader,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket, PublishVariableHeader
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import INCOMING, ApplicationMessage, IncomingApplicationMessage, OutgoingApplicationMessage

from broker import metrics
from broker.delivery import Outbox

log = logging.getLogger(__name__)


async def close_quietly(writer: WriterAdapter, *, abort: bool = False, timeout: float = 1.0) -> None:
    """Close a client socket that may already be gone, or that no longer reads.

    amqtt 0.12.1's `StreamWriterAdapter.close` drains and waits for the close: a peer that reset
    the connection raises ConnectionResetError out of it, and a peer that stopped reading makes
    it wait forever. So: a bounded graceful close, else (or with `abort`) drop the connection.
    """
    if not abort:
        try:
            await asyncio.wait_for(writer.close(), timeout)
            return
        except (OSError, TimeoutError) as exc:
            log.debug("closing a client socket: %r", exc)
    transport = getattr(getattr(writer, "_writer", None), "transport", None)
    if transport is not None:
        transport.abort()
    else:  # WebSocket: its own close has a timeout
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.close(), timeout)


class _PublishHeaderAsSent(PublishVariableHeader):
    """A received PUBLISH variable header, taken as sent (wildcards in the topic name included).

    amqtt 0.12.1 raises MQTTError from `PublishVariableHeader.__init__` for a topic name with
    "+" or "#" while the packet is still being read: the reader loop logs "Message discarded"
    and goes on WITHOUT reading the payload, so the payload bytes are then parsed as packets
    (the stream is out of step and the connection hangs, open). Reading the whole packet lets
    `GatehouseBroker._handle_message_delivery` close the connection [MQTT-3.3.2-2, 4.8.0-1].
    """

    def __init__(self, topic_name: str, packet_id: int | None = None) -> None:
        MQTTVariableHeader.__init__(self)
        self.topic_name = topic_name
        self.packet_id = packet_id


# Parsing only: `PublishPacket.build` (outgoing) still constructs the checking header. Process-wide,
# but amqtt runs here only as our broker, which refuses such a topic after reading the packet.
PublishPacket.VARIABLE_HEADER = _PublishHeaderAsSent


_PACKETS = {
    SUBSCRIBE: "handle_subscribe",
    UNSUBSCRIBE: "handle_unsubscribe",
    PUBACK: "handle_puback",
    PUBREC: "handle_pubrec",
    PUBREL: "handle_pubrel",
    PUBCOMP: "handle_pubcomp",
    PINGREQ: "handle_pingreq",
    DISCONNECT: "handle_disconnect",
    CONNECT: "handle_connect",
}


Deliver = Callable[["GatehouseProtocolHandler", ApplicationMessage], Awaitable[bool]]


class GatehouseProtocolHandler(BrokerProtocolHandler):
    """Replaces amqtt 0.12.1 behaviours of `BrokerProtocolHandler` (see each method)."""

    outbox: Outbox | None
    deliver: Deliver
    max_packet_size: int
    inbound: asyncio.Semaphore
    _last_read: float
    _watchdog: asyncio.TimerHandle | None

    @classmethod
    def adopt(
        cls, handler: BrokerProtocolHandler, *, deliver: Deliver, max_packet_size: int, max_inbound: int
    ) -> GatehouseProtocolHandler:
        """Turn the handler amqtt built into ours (amqtt hard-codes `BrokerProtocolHandler`)."""
        handler.__class__ = cls
        ours: GatehouseProtocolHandler = handler  # type: ignore[assignment]
        ours.outbox = None
        ours.deliver = deliver
        ours.max_packet_size = max_packet_size
        ours.inbound = asyncio.Semaphore(max_inbound)
        ours._last_read = 0.0
        ours._watchdog = None
        return ours

    async def _reader_loop(self) -> None:
        # Rewrites amqtt 0.12.1's reader, which (1) starts a task per incoming PUBLISH and reads on,
        # so a publisher faster than the pipeline grows memory without bound: here at most
        # `inbound` publishes per connection are in hand, then the socket is not read (TCP
        # backpressure); (2) reads a packet of any size (5 MiB passes): here a packet over
        # `max_packet_size` closes that connection only; (3) wraps every read in `wait_for` for
        # the keepalive and does nothing when it expires: a watchdog timer closes the connection
        # instead; (4) fires a plugin event per packet.
        assert self.session is not None and self._reader_ready is not None and self.reader is not None
        client_id = self.session.client_id
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        if self.session.keep_alive:
            self._arm_watchdog(self.session.keep_alive)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._reader_ready.set()
                header = await MQTTFixedHeader.from_stream(self.reader)
                self._last_read = loop.time()
                if not header:
                    break
                if header.remaining_length > self.max_packet_size:
                    metrics.oversize_packets.inc()
                    log.warning(
                        "client %s sent a %d-byte packet (limit %d): closing",
                        client_id,
                        header.remaining_length,
                        self.max_packet_size,
                    )
                    break
                if header.packet_type in (RESERVED_0, RESERVED_15):
                    log.warning("client %s sent a reserved packet type: closing", client_id)
                    break
                try:
                    packet = await packet_class(header).from_stream(self.reader, fixed_header=header)
                except MQTTError as exc:
                    log.warning("client %s sent a malformed packet (%s): closing", client_id, exc)
                    break
                kind = header.packet_type
                if kind == PUBLISH:
                    await self.inbound.acquire()
                    task = loop.create_task(self.handle_publish(packet))
                    tasks.add(task)
                    task.add_done_callback(self._publish_done(tasks))
                elif kind == CONNECT:
                    log.warning("client %s sent a second CONNECT: closing [MQTT-3.1.0-2]", client_id)
                    break
                elif kind in _PACKETS:
                    task = loop.create_task(getattr(self, _PACKETS[kind])(packet))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:
                    log.warning("client %s sent packet type %d a broker never receives: closing", client_id, kind)
                    break
        except (asyncio.CancelledError, NoDataError, ConnectionError):
            pass
        except Exception:
            log.warning("client %s: reader stopped", client_id, exc_info=True)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            for task in tasks:
                task.cancel()
            await self.handle_connection_closed()
            self._reader_stopped.set()
            await self.stop()

    def _arm_watchdog(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()

        def check() -> None:
            silent = loop.time() - self._last_read
            if silent >= timeout:
                self._watchdog = None
                self.handle_read_timeout()
            else:
                self._watchdog = loop.call_later(timeout - silent, check)

        self._watchdog = loop.call_later(timeout, check)

    def _publish_done(self, tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            self.inbound.release()

        return done

    async def _send_packet(self, packet: Any) -> None:
        # Replaces amqtt 0.12.1's, which per packet takes a lock, re-arms a keepalive write timer
        # (a no-op in a broker) and fires a plugin event. One write() of the whole packet cannot
        # interleave with another; drain() waits only when the socket buffer is full.
        writer = self.writer
        if writer is None:
            return
        try:
            writer.write(packet.to_bytes())
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            await self.handle_connection_closed()

    async def _handle_qos0_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        # amqtt 0.12.1 queues the message for the broker's per-client loop (and drops it when the
        # queue is full); the broker handles it here, in the publish's own task.
        if app_message.direction != INCOMING or self.session is None:
            await super()._handle_qos0_message_flow(app_message)
            return
        if app_message.publish_packet is not None and app_message.publish_packet.dup_flag:
            return  # [MQTT-3.3.1-2] DUP must be 0 on QoS 0
        await self.deliver(self, app_message)

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        # amqtt 0.12.1 PUBACKs an incoming QoS 1 message as soon as it is queued. Here the broker
        # handles it first (for telemetry: committed), so an acknowledged sample survives a kill -9.
        if app_message.direction != INCOMING or self.session is None or app_message.packet_id is None:
            await super()._handle_qos1_message_flow(app_message)
            return
        if not await self.deliver(self, app_message):
            return  # not handled (the connection is being closed): no PUBACK, the client resends
        puback = PubackPacket.build(app_message.packet_id)
        await self._send_packet(puback)
        app_message.puback_packet = puback

    async def _handle_qos2_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        # amqtt 0.12.1 sends PUBREC at once, waits for PUBREL inside the publish's task and only
        # then hands the message on: the slot in `inbound` stays taken until PUBREL, which the
        # reader cannot read once every slot is taken (a client with more QoS 2 messages in
        # flight than slots deadlocks), and PUBREC acknowledges what is not yet stored. Here the
        # message is handled first (delivery on PUBLISH, MQTT 3.1.1 §4.3.3 method B), then
        # PUBREC; `inflight_in` keeps a re-sent PUBLISH from being handled twice until PUBREL.
        if app_message.direction != INCOMING or self.session is None or app_message.packet_id is None:
            await super()._handle_qos2_message_flow(app_message)
            return
        packet_id = app_message.packet_id
        if packet_id not in self.session.inflight_in:
            if not await self.deliver(self, app_message):
                return
            self.session.inflight_in[packet_id] = app_message  # type: ignore[assignment]
        await self._send_packet(PubrecPacket.build(packet_id))

    async def handle_pubrel(self, pubrel: PubrelPacket) -> None:
        if self.session is not None and self.session.inflight_in.pop(pubrel.packet_id, None) is not None:
            await self._send_packet(PubcompPacket.build(pubrel.packet_id))
            return
        if pubrel.packet_id in self._pubrel_waiters:
            await super().handle_pubrel(pubrel)
            return
        await self._send_packet(PubcompPacket.build(pubrel.packet_id))  # [MQTT-4.3.3-2] answer anyway

    async def handle_puback(self, puback: PubackPacket) -> None:
        # Outgoing QoS 1 is the outbox's (no 5 s give-up); amqtt's waiters serve the rest.
        header = puback.variable_header
        if self.outbox is not None and header is not None and self.outbox.on_puback(header.packet_id):
            return
        await super().handle_puback(puback)

    async def handle_pubrec(self, pubrec: PubrecPacket) -> None:
        if self.outbox is not None:
            pubrel = self.outbox.on_pubrec(pubrec.packet_id)
            if pubrel is not None:
                await self._send_packet(pubrel)
                return
        await super().handle_pubrec(pubrec)

    async def handle_pubcomp(self, pubcomp: PubcompPacket) -> None:
        if self.outbox is not None and self.outbox.on_pubcomp(pubcomp.packet_id):
            return
        await super().handle_pubcomp(pubcomp)

    def handle_read_timeout(self) -> None:
        # amqtt 0.12.1: `handle_read_timeout` is a no-op, so a client silent past its keepalive
        # stays connected forever and its will is never sent. Close the socket: the reader then
        # sees EOF and the broker's abnormal-disconnect path publishes the will.
        client_id = self.session.client_id if self.session else "?"
        log.warning("client %s silent past 1.5 x keepalive: disconnecting", client_id)
        metrics.keepalive_expired.inc()
        if self.writer is not None:
            asyncio.get_running_loop().create_task(close_quietly(self.writer), name="gatehouse.keepalive-close")
