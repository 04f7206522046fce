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
from amqtt.broker import Broker, Server
from amqtt.contexts import Action, ListenerConfig
from amqtt.errors import MQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session
from amqtt.utils import gen_client_id

from broker import acl, metrics
from broker.bridge import ANONYMOUS, IDENTITY, Bridge, identity_of
from broker.fanout import Fanout, Subscriber
from broker.protocol import GatehouseProtocolHandler, close_quietly
from broker.sessions import SessionStore
from broker.topics import valid_filter
from handlers.context import Context
from handlers.devices import authenticate_device
from handlers.envelope import Identity
from handlers.presence import reset_presence
from handlers.routes import ROUTES, Router

log = logging.getLogger(__name__)


class GatehouseBroker(Bridge, Broker):
    def __init__(
        self,
        config: dict[str, Any],
        ctx: Context,
        *,
        allow_anonymous: bool = False,
        keepalive_grace: float = 0,
        max_packet_size: int = 256 * 1024,
        max_queued: int = 1000,
        max_inflight: int = 20,
        max_inbound: int = 100,
        connect_timeout: float = 10,
    ) -> None:
        super().__init__(config)
        self.ctx = ctx
        self.allow_anonymous = allow_anonymous
        self.keepalive_grace = keepalive_grace
        self.max_packet_size = max_packet_size
        self.max_inbound = max_inbound
        self.connect_timeout = connect_timeout
        self.router = Router(ROUTES)
        self.store = SessionStore()
        self.fanout = Fanout(
            self.store, max_queued=max_queued, max_inflight=max_inflight, on_overflow=self._slow_subscriber
        )
        self._online: Counter[str] = Counter()
        self._stopping = False
        self._cutting: set[str] = set()
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        # Whatever the last run left (a kill -9 leaves devices "online"): nobody is connected yet.
        await reset_presence()
        await super().start()  # clears the session table: load persistent sessions after it
        for stored in await self.store.load():
            handler, session = self.create_offline_session(stored.client_id)
            session.clean_session = False
            if stored.identity is not None:
                session.attributes[IDENTITY] = stored.identity
            self._sessions[stored.client_id] = (session, handler)
            self.fanout.register(Subscriber(stored.client_id, stored.identity, persistent=True, connected=False))
            for topic_filter, qos in stored.subscriptions.items():
                self.fanout.subs.add(topic_filter, stored.client_id, qos)
            outbox = self.fanout.outbox(stored.client_id)
            for msg in stored.messages:
                if not outbox.put(msg):  # over the queue limit (lowered since?): dropped for good
                    self.store.acked(msg)
        self.store.start()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _slow_subscriber(self, client_id: str) -> None:
        # An offline persistent session over its limit just loses the message (counted as
        # dropped); a connected client is cut off once, without waiting for it to read.
        sub = self.fanout.subscribers.get(client_id)
        _, handler = self._sessions.get(client_id, (None, None))
        if sub is None or not sub.connected or handler is None or handler.writer is None:
            return
        if client_id in self._cutting:
            return
        self._cutting.add(client_id)
        metrics.slow_disconnects.inc()
        log.warning(
            "client %s stays over its outgoing queue limit (%d messages): disconnecting",
            client_id,
            self.fanout.max_queued,
        )

        async def cut(writer: WriterAdapter) -> None:
            try:
                await close_quietly(writer, abort=True)
            finally:
                self._cutting.discard(client_id)

        asyncio.get_running_loop().create_task(cut(handler.writer), name="gatehouse.slow-close")

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
            # amqtt 0.12.1 waits for the CONNECT for ever: a socket that never sends one would
            # hold its slot and task indefinitely.
            handler, session = await asyncio.wait_for(
                BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager), self.connect_timeout
            )
        except (MQTTError, TimeoutError) as exc:
            await close_quietly(writer, abort=True)
            raise MQTTError(f"no valid CONNECT: {exc!r}") from exc
        if not session.client_id:
            session.client_id = gen_client_id()  # clean session without an id (persistent ones are refused)
        session.parent = 0
        # amqtt 0.12.1 times a client out at exactly its keepalive (plus a delay option) and then
        # does nothing; MQTT 3.1.1 §3.1.2.10 allows 1.5 x keepalive, after which we disconnect.
        if session.keep_alive > 0:
            session.keep_alive = math.ceil(session.keep_alive * 1.5 + self.keepalive_grace)
        if await self._admit(session):
            existing = self._sessions.get(session.client_id or "")
            if existing is not None and identity_of(existing[0]) not in (None, identity_of(session)):
                # A client id belongs to whoever holds its session: another identity may neither
                # take it over (and read what is queued for it) nor kick it off.
                metrics.auth_failures.inc()
                log.warning("MQTT CONNECT refused: client id %s belongs to another identity", session.client_id)
                del session.attributes[IDENTITY]
            else:
                session = await self._take_over(session)
        ours = GatehouseProtocolHandler.adopt(
            handler, deliver=self._deliver, max_packet_size=self.max_packet_size, max_inbound=self.max_inbound
        )
        return ours, session

    async def _take_over(self, incoming: Session) -> Session:
        """An admitted CONNECT: the session it gets, after settling any session of its client id."""
        existing = self._sessions.get(incoming.client_id or "")
        if existing is None:
            return incoming
        old, old_handler = existing
        if incoming.clean_session or old.clean_session:
            # A clean session's state ends with it [MQTT-3.1.2-6]; amqtt keeps an ended one until
            # its once-a-second cleanup, and a persistent CONNECT in that second must not resume
            # it (session present 0, persisted from now on).
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
        if identity and identity.kind == "provision" and not session.clean_session:
            # Claim replies carry an API key: never kept in a session queue or on disk.
            log.warning(
                "MQTT CONNECT refused: provisioning client %s asked for a persistent session", session.client_id
            )
            del session.attributes[IDENTITY]
            return False
        if identity and session.will_flag:
            will_topic = session.will_topic or ""
            # amqtt 0.12.1 never checks the will topic against the ACL (and publishes the will
            # past it): a device could plant a retained will on another device's topic.
            # A will on a routed topic (telemetry, command results) would reach subscribers
            # without passing its handler: refused too.
            routed = self.router.match(will_topic) is not None
            if routed or not acl.may_publish(identity, session.client_id or "", will_topic):
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
        # amqtt 0.12.1 discards an anonymous client's persistent session and offline messages;
        # an admitted client is not anonymous to it, whoever it is to us.
        session.is_anonymous = False
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
                    # amqtt stops the old connection with a close that waits for a drain, for ever
                    # if that peer stopped reading: abort it instead.
                    old = self._sessions[client_session.client_id]
                    if old[1].writer is not None:
                        await close_quietly(old[1].writer, abort=True)
                    await old[1].handle_connection_closed()
                    break
                await asyncio.sleep(1)

        handler.attach(client_session, reader, writer)
        client_id = client_session.client_id
        self._sessions[client_id] = (client_session, handler)
        await handler.mqtt_connack_authorize(True)
        self.fanout.register(
            Subscriber(client_id, identity, persistent=not client_session.clean_session, connected=True)
        )
        await handler.start()
        # amqtt's offline queue and in-flight retries are replaced by the session's outbox.
        ours: GatehouseProtocolHandler = handler  # type: ignore[assignment]
        ours.outbox = self.fanout.outbox(client_id)
        ours.outbox.attach(handler._send_packet)
        metrics.connections.inc()
        username = identity.username if identity.kind == "device" else None
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            if username:
                await self._presence(username, +1)
            await self._client_message_loop(client_session, handler)
        finally:
            metrics.connections.dec()
            if self._sessions.get(client_id, (None, None))[1] is handler:  # not taken over meanwhile
                self.fanout.disconnected(client_id)
            if username:
                await self._presence(username, -1)
            if task is not None:
                self._connections.discard(task)

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

    # --- subscriptions (the index in broker/fanout.py replaces amqtt's filter dict) -----------

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        if not valid_filter(topic_filter) or qos not in (0, 1, 2):
            return 0x80
        if not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return 0x80
        self.fanout.subscribe(session.client_id or "", topic_filter, qos)
        return qos

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        return int(self.fanout.unsubscribe(session.client_id or "", a_filter))

    async def _del_all_subscriptions(self, session: Session) -> None:
        self.fanout.subs.remove_client(session.client_id or "")

    async def _delete_session(self, client_id: str) -> None:
        await super()._delete_session(client_id)
        self.fanout.forget(client_id)

    async def _cleanup_session(self, client_id: str) -> None:
        # Called by amqtt's session monitor (expired sessions) and at shutdown; a persistent
        # session outlives a shutdown (it is on disk) but not its expiry.
        session, _ = self._sessions.get(client_id, (None, None))
        await super()._cleanup_session(client_id)
        if not (self._stopping and session is not None and not session.clean_session):
            self.fanout.forget(client_id)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # amqtt 0.12.1 tests every retained topic against the filter and sends matches past the
        # ACL (an anonymous '#' subscriber would read device status topics); the retained index
        # finds the matches, and each is checked against the subscriber's RECEIVE ACL.
        topic_filter, qos = subscription
        self.fanout.send_retained(session.client_id or "", topic_filter, qos)

    # --- messages -----------------------------------------------------------------------------

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        # amqtt 0.12.1 hands every PUBLISH to this per-client loop through a queue; our protocol
        # handler delivers QoS 0, 1 and 2 from the publish's own task, so nothing should arrive
        # here. Kept so that anything that ever does still goes through the pipeline, never
        # around it.
        app_message: ApplicationMessage | None = wait_deliver.result()
        if app_message is not None:
            await self._deliver(handler, app_message)  # type: ignore[arg-type]
        return True

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        # amqtt 0.12.1 queues every message for one global broadcast loop that tests every
        # subscription filter; here the index finds the subscribers at once (wills and internal
        # publishes come through here; `force_qos` is then the publish QoS).
        if topic:
            self.fanout.publish(topic, bytes(data or b""), force_qos)

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        # amqtt 0.12.1 keeps an empty retained payload instead of clearing [MQTT-3.3.1-10].
        if topic_name is not None:
            self.fanout.retain(topic_name, bytes(data or b""), qos or 0)

    async def shutdown(self) -> None:
        # amqtt 0.12.1's shutdown cancels each connection's reader task, and under load one can
        # stay "cancelling" forever, hanging the stop. Closing every client socket first lets
        # each reader end on EOF through the ordinary disconnect path; then shut down, bounded.
        # Each close is bounded (a client that stopped reading is aborted), and all run at once.
        await asyncio.gather(
            *(close_quietly(h.writer) for _, h in list(self._sessions.values()) if h.writer is not None)
        )
        # Let each connection finish its own ending (presence, session) while the database and
        # the session store are still open.
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)
        self._stopping = True
        try:
            await asyncio.wait_for(super().shutdown(), timeout=10)
        except TimeoutError:
            log.warning("broker shutdown did not finish within 10 s; going on")
        for outbox in self.fanout.outboxes.values():
            outbox.detach()
        await self.store.stop()
