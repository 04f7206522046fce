"""GatehouseBroker: amqtt's Broker with our authentication, ACL, pipeline bridge and fixes.

Each overridden method names the amqtt 0.12.1 behaviour it replaces.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker, RetainedApplicationMessage, Server
from amqtt.contexts import Action, ListenerConfig
from amqtt.errors import MQTTError
from amqtt.events import BrokerEvents
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session
from amqtt.utils import gen_client_id

from broker import acl, metrics
from broker.protocol import GatehouseProtocolHandler, close_quietly
from handlers.context import Context
from handlers.devices import authenticate_device
from handlers.effects import DisconnectDevice, Effect, Publish
from handlers.envelope import Envelope, Identity
from handlers.errors import GatehouseError
from handlers.presence import device_offline, device_online
from handlers.routes import ROUTES, Router

log = logging.getLogger(__name__)

IDENTITY = "gatehouse.identity"
ANONYMOUS = Identity("anonymous")


def identity_of(session: Session) -> Identity | None:
    return session.attributes.get(IDENTITY)


class GatehouseBroker(Broker):
    def __init__(
        self, config: dict[str, Any], ctx: Context, *, allow_anonymous: bool = False, keepalive_grace: float = 0
    ) -> None:
        super().__init__(config)
        self.ctx = ctx
        self.allow_anonymous = allow_anonymous
        self.keepalive_grace = keepalive_grace
        self.router = Router(ROUTES)
        self._online: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- connection ---------------------------------------------------------------------------

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        # Rewrites amqtt 0.12.1's method, which settles the session table BEFORE the CONNECT is
        # authenticated: a clean-session CONNECT deletes the subscriptions of a connected client
        # with the same client id (that connection stays open and silently receives nothing), a
        # persistent one takes over its session and drops its connection. Anyone knowing a
        # client id could do that with a CONNECT that is then refused. Here the fresh session is
        # admitted first; only an admitted CONNECT touches another session.
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except MQTTError:
            await close_quietly(writer)
            raise
        if not session.client_id:
            session.client_id = gen_client_id()  # clean session without an id (persistent ones are refused)
        session.parent = 0
        # amqtt 0.12.1 times a client out at exactly its keepalive (plus a delay option) and then
        # does nothing; MQTT 3.1.1 §3.1.2.10 allows 1.5 x keepalive, after which we disconnect.
        if session.keep_alive > 0:
            session.keep_alive = math.ceil(session.keep_alive * 1.5 + self.keepalive_grace)
        if await self._admit(session):
            session = await self._take_over(session)
        return GatehouseProtocolHandler.adopt(handler), session

    async def _take_over(self, incoming: Session) -> Session:
        """An admitted CONNECT: the session it gets, after settling any session of its client id."""
        existing = self._sessions.get(incoming.client_id or "")
        if existing is None:
            return incoming
        old, old_handler = existing
        if incoming.clean_session:
            await self._delete_session(incoming.client_id or "")
            # [MQTT-3.1.4-2] the client already connected with this id is disconnected (amqtt
            # 0.12.1 leaves that connection open, detached from its session).
            if old.transitions.is_connected() and old_handler is not None and old_handler.writer is not None:
                log.info("client %s connected again: closing its previous connection", incoming.client_id)
                await close_quietly(old_handler.writer)
            return incoming
        # A persistent session resumes: the new connection brings its own credentials and will.
        # (amqtt's take-over of a still-connected one happens in _handle_client_session.)
        for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive"):
            setattr(old, name, getattr(incoming, name))
        old.username, old.password = incoming.username, incoming.password
        old.remote_address, old.remote_port = incoming.remote_address, incoming.remote_port
        old.attributes[IDENTITY] = incoming.attributes[IDENTITY]
        old.is_anonymous = incoming.is_anonymous
        old.parent = 1
        return old

    async def _admit(self, session: Session) -> bool:
        """Authenticate a CONNECT and check its will topic; only an admitted session has an identity."""
        if not await self._authenticate(session):
            return False
        identity = identity_of(session)
        if identity and session.will_flag:
            will_topic = session.will_topic or ""
            # amqtt 0.12.1 never checks the will topic against the ACL (and publishes the will
            # past it): a device could plant a retained will on another device's topic.
            if not acl.may_publish(identity, session.client_id or "", will_topic):
                metrics.acl_denials.labels("will").inc()
                log.warning(
                    "MQTT CONNECT refused: client %s will topic %r outside its ACL", session.client_id, will_topic
                )
                del session.attributes[IDENTITY]
                return False
        return True

    async def _authenticate(self, session: Session, listener: ListenerConfig | None = None) -> bool:
        # Replaces amqtt's plugin-based authentication: the device registry decides.
        identity = await self._identify(session)
        if identity is None:
            metrics.auth_failures.inc()
            log.warning(
                "MQTT CONNECT refused: client %s username %r from %s",
                session.client_id,
                session.username,
                session.remote_address,
            )
            return False
        session.attributes[IDENTITY] = identity
        session.is_anonymous = identity.kind == "anonymous"
        return True

    async def _identify(self, session: Session) -> Identity | None:
        if session.username == "provision":
            return Identity("provision", "provision")
        if session.username and session.password:
            return await authenticate_device(session.username, session.password)
        if not session.username and self.allow_anonymous:
            return ANONYMOUS
        return None

    async def _handle_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        client_session: Session,
        handler: BrokerProtocolHandler,
        server: Server,
        listener_name: str,
    ) -> None:
        # Rewrites amqtt 0.12.1's method:
        # - admission (authentication, will topic ACL) already happened in
        #   _initialize_client_session; a refused CONNECT gets "not authorized" and leaves the
        #   session table as it was;
        # - on connect, retained messages matching ANY client's filters were pushed to the new
        #   client past the ACL: we push none here (MQTT sends retained messages on SUBSCRIBE);
        # - presence: the device's status topic and record follow its connections.
        identity = identity_of(client_session)
        if identity is None:
            handler.attach(client_session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await close_quietly(writer)
            return

        while True:
            try:
                client_session.transitions.connect()
                break
            except Exception:
                if client_session.transitions.is_connected():
                    old = self._sessions[client_session.client_id]
                    await old[1].handle_connection_closed()
                    await old[1].stop()
                    break
                await asyncio.sleep(1)

        handler.attach(client_session, reader, writer)
        self._sessions[client_session.client_id] = (client_session, handler)
        await handler.mqtt_connack_authorize(True)

        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED, client_id=client_session.client_id, client_session=client_session
        )
        await handler.start()
        await self._publish_session_retained_messages(client_session)
        metrics.connections.inc()
        username = identity.username if identity.kind == "device" else None
        try:
            if username:
                await self._presence(username, +1)
            await self._client_message_loop(client_session, handler)
        finally:
            metrics.connections.dec()
            if username:
                await self._presence(username, -1)

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

    # --- ACL ----------------------------------------------------------------------------------

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        # Replaces amqtt's plugin-based topic filtering (where a plugin returning None denies).
        identity = identity_of(session)
        if identity is None:
            return False
        client_id = session.client_id or ""
        if action == Action.PUBLISH:
            allowed = acl.may_publish(identity, client_id, topic)
        elif action == Action.SUBSCRIBE:
            allowed = acl.may_subscribe(identity, client_id, topic)
        else:
            return acl.may_receive(identity, client_id, topic)
        if not allowed:
            metrics.acl_denials.labels(str(action.value)).inc()
            log.warning("ACL denied %s on %r for client %s", action, topic, client_id)
        return allowed

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # amqtt 0.12.1 sends every matching retained message without asking the ACL; an anonymous
        # '#' subscriber would read device status topics. Check RECEIVE per retained topic.
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        sends = []
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(session, topic, Action.RECEIVE):
                sends.append(handler.mqtt_publish(topic, retained.data, min(qos, retained.qos or qos), retain=True))
        if sends:
            await asyncio.gather(*sends, return_exceptions=True)

    # --- messages -----------------------------------------------------------------------------

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        # Rewrites amqtt 0.12.1's method: an allowed message that matches a route goes through the
        # handler pipeline (in its own task, so one slow sample does not stall the connection);
        # its PUBACK is released once the handler is done, and subscribers get whatever the
        # handler publishes. Everything else is forwarded as before.
        app_message: ApplicationMessage | None = wait_deliver.result()
        if app_message is None:
            return True
        ours: GatehouseProtocolHandler = handler  # type: ignore[assignment]
        metrics.messages_in.inc()
        topic = app_message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            log.warning("client %s sent PUBLISH on invalid topic %r: closing", client_session.client_id, topic)
            # amqtt 0.12.1 returns False here, which only ends the broker's message loop: the
            # socket stays open and the client never learns. Close the socket instead (the PUBACK
            # released below is then not sent) and keep the loop: its reader sees EOF and the
            # ordinary abnormal-disconnect path runs (will, presence, session cleanup).
            if handler.writer is not None:
                await close_quietly(handler.writer)
            ours.release(app_message)
            return True
        if not await self._topic_filtering(client_session, topic, Action.PUBLISH):
            ours.release(app_message)
            return True
        found = self.router.match(topic)
        if found is None:
            await self._forward(client_session, app_message)
            ours.release(app_message)
            return True
        task = asyncio.get_running_loop().create_task(
            self._run_route(client_session, ours, app_message, *found), name="gatehouse.mqtt-handler"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _forward(self, session: Session | None, app_message: ApplicationMessage) -> None:
        await self._broadcast_message(session, app_message.topic, app_message.data)
        if app_message.publish_packet and app_message.publish_packet.retain_flag:
            await self.retain_message(session, app_message.topic, app_message.data, app_message.qos)

    async def _run_route(
        self,
        session: Session,
        handler: GatehouseProtocolHandler,
        app_message: ApplicationMessage,
        route: Any,
        params: list[str],
    ) -> None:
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
            log.warning("client %s: refused payload on %s: %s", env.client_id, env.topic, exc.detail)
            effects = [route.on_error(env, params, exc)]
        except Exception:
            metrics.handler_failures.inc()
            log.exception("handler failed for client %s on %s", env.client_id, env.topic)
            effects = [route.on_error(env, params, GatehouseError("internal error", code="internal"))]
        finally:
            handler.release(app_message)
        await self.apply(effects)

    # --- effects ------------------------------------------------------------------------------

    async def apply(self, effects: list[Effect]) -> None:
        """Carry out handler effects: publish to subscribers, drop device connections."""
        for effect in effects:
            if isinstance(effect, Publish):
                await self.internal_message_broadcast(effect.topic, effect.payload, effect.qos)
                if effect.retain:
                    await self.retain_message(None, effect.topic, effect.payload, effect.qos)
            elif isinstance(effect, DisconnectDevice):
                await self.disconnect_device(effect.username, effect.reason)

    async def disconnect_device(self, username: str, reason: str) -> int:
        closed = 0
        for session, handler in list(self._sessions.values()):
            identity = identity_of(session)
            if (
                identity
                and identity.kind == "device"
                and identity.username == username
                and session.transitions.is_connected()
                and handler.writer is not None
            ):
                log.info("closing MQTT connection of %s (client %s): %s", username, session.client_id, reason)
                await close_quietly(handler.writer)
                closed += 1
        return closed

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        # An empty retained payload clears the topic's retained message [MQTT-3.3.1-10].
        if topic_name is not None and not data:
            self._retained_messages.pop(topic_name, None)
            return
        if topic_name is not None and data is not None:
            self._retained_messages[topic_name] = RetainedApplicationMessage(source_session, topic_name, data, qos)

    async def shutdown(self) -> None:
        # amqtt 0.12.1's shutdown cancels each connection's reader task, and under load one can
        # stay "cancelling" forever, hanging the stop. Closing every client socket first lets
        # each reader end on EOF through the ordinary disconnect path; then shut down, bounded.
        for _, handler in list(self._sessions.values()):
            if handler.writer is not None:
                await close_quietly(handler.writer)
        await asyncio.sleep(0)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(super().shutdown(), timeout=10)
        except TimeoutError:
            log.warning("broker shutdown did not finish within 10 s; going on")
