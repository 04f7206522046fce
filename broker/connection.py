"""One client connection: one reader loop that handles its packets in the order they arrive.

A packet is read whole (our framing), checked strictly, then handled by one small method per
packet type before the next is read; a routed PUBLISH only starts its handler and lets the
pipeline finish it in order (see `broker/pipeline.py`). Every way out of `run` closes the socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from broker import codec, metrics
from broker.codec import Ack, Connect, Control, Malformed, Publish, Subscribe, TooLarge, Unsubscribe
from broker.keepalive import Watchdog, allowed_silence
from broker.pipeline import Pipeline
from broker.session import Session
from broker.transport import Stream

if TYPE_CHECKING:
    from broker.server import Broker

log = logging.getLogger(__name__)


class Closing(Exception):
    """Stop reading: the client disconnected, broke the protocol, or is being disconnected."""


class Connection:
    def __init__(self, stream: Stream, broker: Broker) -> None:
        self.stream = stream
        self.broker = broker
        self.session: Session | None = None
        self.will: codec.Will | None = None
        self.closed = False
        self.done = asyncio.Event()
        self._watchdog: Watchdog | None = None
        self._pipeline: Pipeline | None = None

    @property
    def client_id(self) -> str:
        return self.session.client_id if self.session else "?"

    async def run(self) -> None:
        """Serve the connection to its end; the socket is closed on every path."""
        try:
            connect = await self._read_connect()
            if connect is not None and await self.broker.open(self, connect):
                try:
                    await self._serve()
                finally:
                    await self.broker.close(self)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("connection %s (%s) failed", self.client_id, self.stream.peer)
        finally:
            if self._pipeline is not None:
                self._pipeline.stop()
            if self._watchdog is not None:
                self._watchdog.cancel()
            await self.close()
            self.done.set()

    async def _read_connect(self) -> Connect | None:
        # amqtt 0.12.1 waits for the CONNECT for ever: a socket that never sends one would hold its
        # slot and task indefinitely.
        try:
            async with asyncio.timeout(self.broker.limits.connect_timeout):
                frame = await codec.read_frame(self.stream, self.broker.limits.max_packet_size)
                if frame is None:
                    return None
                packet = await codec.decode(*frame)
        except Malformed as exc:
            self._malformed(exc)
            return None
        if not isinstance(packet, Connect):
            log.warning("%s sent packet type %d before CONNECT: closing", self.stream.peer, frame[0])
            return None
        return packet

    def start(self, session: Session, connect: Connect) -> None:
        """Admitted: from now on the connection serves `session`."""
        self.session = session
        self.will = connect.will
        self._pipeline = Pipeline(self.broker.limits.max_inbound, session.client_id)
        silence = allowed_silence(connect.keepalive, self.broker.limits.keepalive_grace)
        self._watchdog = Watchdog(silence, self._keepalive_expired)

    async def _serve(self) -> None:
        assert self._pipeline is not None and self._watchdog is not None and self.session is not None
        session = self.session
        pipeline, watchdog, limit = self._pipeline, self._watchdog, self.broker.limits.max_packet_size
        try:
            while not self.closed:
                frame = await codec.read_frame(self.stream, limit)
                watchdog.touch()
                if frame is None:
                    return
                packet = await codec.decode(*frame)
                if isinstance(packet, Publish):
                    metrics.messages_in.inc()
                    found = self.broker.bridge.routed(session, packet.topic)
                    if found is not None:
                        await pipeline.add(self._start_route(packet, found), self._finish(packet))
                        continue
                if pipeline.idle():
                    if not await self._handle(packet):
                        return
                else:
                    await pipeline.add(None, self._deferred(packet))
        except TooLarge as exc:
            metrics.oversize_packets.inc()
            log.warning("client %s sent a %d-byte packet (limit %d): closing", self.client_id, exc.size, limit)
        except Malformed as exc:
            self._malformed(exc)
        except Closing:
            pass

    def _malformed(self, exc: Exception) -> None:
        metrics.malformed_packets.inc()
        log.warning("client %s (%s) sent a malformed packet (%s): closing", self.client_id, self.stream.peer, exc)

    # --- packets ------------------------------------------------------------------------------

    async def _handle(self, packet: Any) -> bool:
        """Handle one packet; False: the connection ends (DISCONNECT, protocol error)."""
        handler = _HANDLERS.get(type(packet))
        if handler is None:
            return False
        return await handler(self, packet)

    def _deferred(self, packet: Any) -> Any:
        async def finish(_: Any) -> bool:
            if self.closed:
                return False
            if not await self._handle(packet):
                await self.close()
                return False
            return True

        return finish

    async def _on_connect(self, packet: Connect) -> bool:
        log.warning("client %s sent a second CONNECT: closing [MQTT-3.1.0-2]", self.client_id)
        return False

    async def _on_publish(self, packet: Publish) -> bool:
        assert self.session is not None
        if packet.qos == 2 and packet.packet_id in self.session.inflight_in:
            await self.send(codec.ack(codec.PUBREC, packet.packet_id))  # a re-send before PUBREL: once only
            return True
        self.broker.bridge.forward(self.session, packet)
        return await self._acknowledge(packet)

    def _start_route(self, packet: Publish, found: Any) -> Any:
        assert self.session is not None
        if packet.qos == 2 and packet.packet_id in self.session.inflight_in:
            return None
        return self.broker.bridge.start(self.session, packet, found, self.stream.peer)

    def _finish(self, packet: Publish) -> Any:
        async def finish(outcome: Any) -> bool:
            assert self.session is not None
            if self.closed:
                return False
            if outcome is None:  # a QoS 2 re-send already handled
                await self.send(codec.ack(codec.PUBREC, packet.packet_id or 0))
                return True
            if not outcome.handled:
                # A bug or a storage failure: not handled, so not acknowledged. Close without
                # PUBACK; the client sends it again when it reconnects.
                await self.close(abort=True)
                return False
            await self.broker.bridge.apply(outcome.effects, origin=self)
            return await self._acknowledge(packet)

        return finish

    async def _acknowledge(self, packet: Publish) -> bool:
        if packet.qos == 1:
            await self.send(codec.ack(codec.PUBACK, packet.packet_id or 0))
        elif packet.qos == 2:
            # Delivery on PUBLISH (MQTT 3.1.1 §4.3.3 method B): handled before PUBREC, duplicates
            # filtered until PUBREL.
            assert self.session is not None and packet.packet_id is not None
            self.session.inflight_in.add(packet.packet_id)
            await self.send(codec.ack(codec.PUBREC, packet.packet_id))
        return True

    async def _on_ack(self, packet: Ack) -> bool:
        assert self.session is not None
        outbox = self.broker.fanout.outboxes.get(self.session.client_id)
        if packet.kind == codec.PUBREL:
            self.session.inflight_in.discard(packet.packet_id)
            await self.send(codec.ack(codec.PUBCOMP, packet.packet_id))  # answered even if unknown [MQTT-4.3.3-2]
        elif outbox is None:
            pass
        elif packet.kind == codec.PUBACK:
            outbox.on_puback(packet.packet_id)
        elif packet.kind == codec.PUBREC:
            if outbox.on_pubrec(packet.packet_id):
                await self.send(codec.ack(codec.PUBREL, packet.packet_id))
        elif packet.kind == codec.PUBCOMP:
            outbox.on_pubcomp(packet.packet_id)
        return True

    async def _on_subscribe(self, packet: Subscribe) -> bool:
        assert self.session is not None
        codes = [self.broker.subscribe(self.session, f, qos) for f, qos in packet.filters]
        await self.send(codec.suback(packet.packet_id, codes))
        # Retained messages after the SUBACK, each checked against the subscriber's RECEIVE ACL.
        for (topic_filter, _), code in zip(packet.filters, codes, strict=True):
            if code != 0x80:
                self.broker.fanout.send_retained(self.session.client_id, topic_filter, code)
        return True

    async def _on_unsubscribe(self, packet: Unsubscribe) -> bool:
        assert self.session is not None
        for topic_filter in packet.filters:
            self.broker.fanout.unsubscribe(self.session.client_id, topic_filter)
        await self.send(codec.unsuback(packet.packet_id))
        return True

    async def _on_control(self, packet: Control) -> bool:
        if packet.kind == codec.PINGREQ:
            await self.send(codec.PINGRESP)
            return True
        self.will = None  # DISCONNECT: a clean end, no will [MQTT-3.14.4-3]
        return False

    # --- writing and closing ------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.stream.write(data)
            await self.stream.drain()
        except (ConnectionError, RuntimeError) as exc:
            log.debug("client %s: write failed: %r", self.client_id, exc)
            await self.close(abort=True)
            raise ConnectionResetError("client gone") from exc

    async def close(self, *, abort: bool = False) -> None:
        """Close the socket (bounded; `abort` drops it at once, for a peer that may not be reading)."""
        if self.closed:
            return
        self.closed = True
        if abort:
            self.stream.abort()
        else:
            await self.stream.close()

    def abort(self) -> None:
        """Drop the connection now, without waiting for the peer (which may have stopped reading)."""
        if not self.closed:
            self.closed = True
            self.stream.abort()

    def _keepalive_expired(self) -> None:
        # amqtt 0.12.1's `handle_read_timeout` is a no-op: a silent client stayed for ever and its
        # will was never sent. Closing the socket ends the reader; the will goes out on the way.
        log.warning("client %s silent past 1.5 x keepalive: disconnecting", self.client_id)
        metrics.keepalive_expired.inc()
        self.abort()


_HANDLERS: dict[type, Any] = {
    Publish: Connection._on_publish,
    Ack: Connection._on_ack,
    Subscribe: Connection._on_subscribe,
    Unsubscribe: Connection._on_unsubscribe,
    Control: Connection._on_control,
    Connect: Connection._on_connect,
}
