"""The bridge between the broker and the handler pipeline: an incoming PUBLISH becomes an
Envelope for its route (or is forwarded), and handler effects become publishes and disconnects."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from amqtt.contexts import Action
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session

from broker import metrics
from broker.fanout import Fanout
from broker.protocol import GatehouseProtocolHandler, close_quietly
from handlers.context import Context
from handlers.effects import DisconnectDevice, Effect, Publish
from handlers.envelope import Envelope, Identity
from handlers.errors import GatehouseError
from handlers.presence import device_offline, device_online
from handlers.routes import Router

log = logging.getLogger(__name__)

IDENTITY = "gatehouse.identity"
ANONYMOUS = Identity("anonymous")


def identity_of(session: Session) -> Identity | None:
    return session.attributes.get(IDENTITY)


class Bridge:
    """Mixed into GatehouseBroker; uses its session table, fan-out and `_topic_filtering`."""

    ctx: Context
    router: Router
    fanout: Fanout
    _online: Counter[str]
    _sessions: dict[str, tuple[Session, BrokerProtocolHandler]]

    async def _deliver(self, handler: GatehouseProtocolHandler, app_message: ApplicationMessage) -> bool:
        """An incoming PUBLISH: checked, then through the handler pipeline (routed topics, which
        the PUBACK waits for) or forwarded to subscribers. False: do not acknowledge it."""
        session = handler.session
        if session is None:
            return False
        metrics.messages_in.inc()
        topic = app_message.topic
        if not topic or "#" in topic or "+" in topic:
            log.warning("client %s sent PUBLISH on invalid topic %r: closing", session.client_id, topic)
            # amqtt 0.12.1 only ends its message loop here: the socket stays open and the client
            # never learns. Close the socket; the reader sees EOF and the ordinary
            # abnormal-disconnect path runs (will, presence, session cleanup).
            if handler.writer is not None:
                await close_quietly(handler.writer)
            return False
        if not await self._topic_filtering(session, topic, Action.PUBLISH):
            return True  # dropped and counted; MQTT 3.1.1 has no negative acknowledgement
        found = self.router.match(topic)
        if found is None:
            self._forward(session, app_message)
            return True
        return await self._run_route(session, handler, app_message, *found)

    def _forward(self, session: Session | None, app_message: ApplicationMessage) -> None:
        data = bytes(app_message.data or b"")
        # Delivery QoS is the lower of the publish and the subscription QoS (amqtt 0.12.1 uses
        # the subscription's).
        self.fanout.publish(app_message.topic, data, app_message.qos or 0)
        if app_message.publish_packet and app_message.publish_packet.retain_flag:
            self.fanout.retain(app_message.topic, data, app_message.qos or 0)

    async def _run_route(
        self,
        session: Session,
        handler: GatehouseProtocolHandler,
        app_message: ApplicationMessage,
        route: Any,
        params: list[str],
    ) -> bool:
        identity = identity_of(session) or ANONYMOUS
        env = Envelope(
            source="mqtt",
            topic=app_message.topic,
            identity=identity,
            payload=bytes(app_message.data or b""),
            qos=app_message.qos or 0,
            client_id=session.client_id or "",
            remote=f"{session.remote_address}:{session.remote_port}",
        )
        try:
            effects = await route.handler(self.ctx, env, params)
        except GatehouseError as exc:
            metrics.messages_refused.inc()
            log.warning("client %s: refused payload on %s: %.200s", env.client_id, env.topic, exc.detail)
            effects = [route.on_error(env, params, exc)]
        except Exception:
            # A bug or a storage failure (database locked, disk full): the message was not
            # handled, so it must not be acknowledged. Close the connection without a PUBACK;
            # the client sends it again when it reconnects.
            metrics.handler_failures.inc()
            log.exception("handler failed for client %s on %s: closing without PUBACK", env.client_id, env.topic)
            if handler.writer is not None:
                await close_quietly(handler.writer, abort=True)
            return False
        await self.apply(effects, origin=handler)
        return True

    # --- effects ------------------------------------------------------------------------------

    async def apply(self, effects: list[Effect], origin: BrokerProtocolHandler | None = None) -> None:
        """Carry out handler effects: publish to subscribers, drop device connections.

        A reply (`Publish.reply_to`) goes only to the connection the request came in on, and only
        while it is still that client id's connection: a claim's API key never reaches a client
        that took the id over meanwhile, nor a session queue.
        """
        for effect in effects:
            if isinstance(effect, Publish):
                if effect.reply_to is not None:
                    current = self._sessions.get(effect.reply_to, (None, None))[1]
                    if origin is not None and current is origin:
                        self.fanout.publish(effect.topic, effect.payload, effect.qos, only=effect.reply_to)
                    continue
                self.fanout.publish(effect.topic, effect.payload, effect.qos)
                if effect.retain:
                    self.fanout.retain(effect.topic, effect.payload, effect.qos or 0)
            elif isinstance(effect, DisconnectDevice):
                await self.disconnect_device(effect.username, effect.reason, forget=effect.forget)

    async def disconnect_device(self, username: str, reason: str, *, forget: bool = False) -> int:
        """Close the device's connections; with `forget` (the device was deleted) also drop its
        persistent sessions and the retained messages under its topics, so a device created later
        with the same username inherits nothing."""
        closed = 0
        for client_id, (session, handler) in list(self._sessions.items()):
            identity = identity_of(session)
            if not (identity and identity.kind == "device" and identity.username == username):
                continue
            if session.transitions.is_connected() and handler.writer is not None:
                log.info("closing MQTT connection of %s (client %s): %s", username, client_id, reason)
                await close_quietly(handler.writer)
                closed += 1
            if forget:
                session.clean_session = True  # its end is final
                self._sessions.pop(client_id, None)
                self.fanout.forget(client_id, purge=True)
        if forget:
            self.fanout.clear_retained(f"devices/{username}/")
        return closed

    async def _presence(self, username: str, delta: int) -> None:
        before = self._online[username]
        self._online[username] += delta
        after = self._online[username]
        if after <= 0:
            del self._online[username]
        try:
            if before == 0 and after > 0:
                await self.apply(await device_online(username))
            elif before > 0 and after <= 0:
                await self.apply(await device_offline(username))
        except Exception:
            log.exception("presence update failed for %s", username)
