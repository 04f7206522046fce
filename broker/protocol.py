"""Our amqtt protocol handler: keepalive enforced, QoS 1 PUBACK only once the message is handled."""

from __future__ import annotations

import asyncio
import logging

from amqtt.adapters import WriterAdapter
from amqtt.mqtt.packet import MQTTVariableHeader
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket, PublishVariableHeader
from amqtt.session import INCOMING, ApplicationMessage, IncomingApplicationMessage, OutgoingApplicationMessage

from broker import metrics

log = logging.getLogger(__name__)


async def close_quietly(writer: WriterAdapter) -> None:
    """Close a client socket that may already be gone.

    amqtt 0.12.1's `StreamWriterAdapter.close` drains and waits for the close, so a peer that
    reset the connection (a refused client hanging up at once, say) raises ConnectionResetError
    out of it: unhandled in the connection callback, or into an HTTP request that replaced a key.
    """
    try:
        await writer.close()
    except OSError as exc:
        log.debug("closing a client socket: %r", exc)


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


class GatehouseProtocolHandler(BrokerProtocolHandler):
    """Replaces two amqtt 0.12.1 behaviours of `BrokerProtocolHandler` (see each method)."""

    _acks: dict[int, asyncio.Future[None]]

    @classmethod
    def adopt(cls, handler: BrokerProtocolHandler) -> GatehouseProtocolHandler:
        """Turn the handler amqtt built into ours (amqtt hard-codes `BrokerProtocolHandler`)."""
        handler.__class__ = cls
        ours: GatehouseProtocolHandler = handler  # type: ignore[assignment]
        ours._acks = {}
        return ours

    def handle_read_timeout(self) -> None:
        # amqtt 0.12.1: `handle_read_timeout` is a no-op, so a client silent past its keepalive
        # stays connected forever and its will is never sent. Close the socket: the reader then
        # sees EOF and the broker's abnormal-disconnect path publishes the will.
        client_id = self.session.client_id if self.session else "?"
        log.warning("client %s silent past 1.5 x keepalive: disconnecting", client_id)
        metrics.keepalive_expired.inc()
        if self.writer is not None:
            asyncio.get_running_loop().create_task(close_quietly(self.writer), name="gatehouse.keepalive-close")

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        # amqtt 0.12.1 PUBACKs an incoming QoS 1 message as soon as it is queued. We PUBACK only
        # once the broker has handled it (for telemetry: committed), so an acknowledged sample
        # survives a kill -9.
        if app_message.direction != INCOMING or self.session is None or app_message.packet_id is None:
            await super()._handle_qos1_message_flow(app_message)
            return
        handled = asyncio.get_running_loop().create_future()
        self._acks[id(app_message)] = handled
        try:
            await self.session.delivered_message_queue.put(app_message)
            await handled
        finally:
            self._acks.pop(id(app_message), None)
        puback = PubackPacket.build(app_message.packet_id)
        await self._send_packet(puback)
        app_message.puback_packet = puback

    def release(self, app_message: ApplicationMessage) -> None:
        """The broker is done with this message: let its PUBACK go."""
        handled = self._acks.get(id(app_message))
        if handled is not None and not handled.done():
            handled.set_result(None)
