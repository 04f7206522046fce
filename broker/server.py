"""The broker: listeners, and what happens when a connection opens and when it ends.

amqtt 0.12.1 is used as a codec only (`broker/codec.py`); everything above it is ours.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from broker import acl, codec, metrics, transport
from broker.admission import ACCEPTED, BAD_CLIENT_ID, NOT_AUTHORIZED, UNAVAILABLE, Admission, Authenticate
from broker.bridge import Bridge
from broker.codec import Connect
from broker.connection import Connection
from broker.fanout import Fanout
from broker.presence import Presence
from broker.registry import SessionRegistry
from broker.session import Session
from broker.sessions import SessionStore
from broker.topics import valid_filter
from broker.transport import Stream
from handlers import iotlock_commands
from handlers.context import Context
from handlers.devices import authenticate_device
from handlers.effects import Effect
from handlers.envelope import Identity
from handlers.presence import reset_presence
from handlers.routes import ROUTES, Router

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    max_packet_size: int = 256 * 1024
    max_queued: int = 1000
    max_inflight: int = 20
    max_inbound: int = 100
    connect_timeout: float = 10
    keepalive_grace: float = 0
    session_expiry: float = 7 * 86400
    max_queued_bytes: int = 8 * 1024 * 1024
    max_connections_per_identity: int = 10
    max_retained_per_device: int = 100
    max_retained_bytes_per_device: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Listener:
    kind: str  # "tcp" (plain or TLS) or "ws"
    host: str
    port: int
    tls: ssl.SSLContext | None = None


class Broker:
    def __init__(
        self,
        ctx: Context,
        listeners: list[Listener],
        limits: Limits = Limits(),
        *,
        allow_anonymous: bool = False,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.ctx = ctx
        self.listeners = listeners
        self.limits = limits
        self.store = SessionStore(ctx.jwt_secret)
        self.fanout = Fanout(
            self.store,
            max_queued=limits.max_queued,
            max_inflight=limits.max_inflight,
            on_overflow=self._slow_subscriber,
            max_queued_bytes=limits.max_queued_bytes,
            max_retained_per_device=limits.max_retained_per_device,
            max_retained_bytes_per_device=limits.max_retained_bytes_per_device,
        )
        self.registry = SessionRegistry(self.fanout, self.store, expiry_seconds=limits.session_expiry)
        self.fanout.on_delivered = self._delivered
        self.router = Router(ROUTES)
        self.bridge = Bridge(ctx, self.router, self.fanout, self.registry)
        self.admission = Admission(
            authenticate or functools.partial(authenticate_device, ctx),
            allow_anonymous=allow_anonymous,
            routed=lambda topic: self.router.match(topic) is not None,
        )
        self.presence = Presence()
        self.connected: set[Connection] = set()
        self._accepted: set[Connection] = set()
        self._servers: list[Any] = []
        self.running = False

    @property
    def connection_count(self) -> int:
        return len(self.connected)

    @property
    def sessions(self) -> dict[str, Session]:
        return self.registry.sessions

    async def start(self, *, listen: bool = True) -> None:
        # Whatever the last run left (a kill -9 leaves devices "online"): nobody is connected yet.
        await reset_presence()
        await self.registry.load()
        self.store.start()
        if listen:
            await self.listen()
        self.running = True

    async def listen(self) -> None:
        for listener in self.listeners:
            if listener.kind == "ws":
                server: Any = await transport.listen_ws(listener.host, listener.port, self.serve)
            else:
                server = await transport.listen_tcp(listener.host, listener.port, self.serve, listener.tls)
            self._servers.append(server)

    async def serve(self, stream: Stream) -> None:
        """A new client connection, served until it ends."""
        connection = Connection(stream, self)
        self._accepted.add(connection)
        try:
            await connection.run()
        finally:
            self._accepted.discard(connection)

    async def apply(self, effects: list[Effect]) -> None:
        """The effector the handlers' REST side uses (commands, key replacement, deletion)."""
        await self.bridge.apply(effects)

    # --- a connection opens and ends ----------------------------------------------------------

    async def open(self, connection: Connection, connect: Connect) -> bool:
        """Admission, then the session: True once CONNACK 0 is sent."""
        verdict = await self.admission.admit(connect, connection.stream.peer)
        identity, code, client_id = verdict.identity, verdict.return_code, verdict.client_id
        if identity is not None:
            code = self._session_verdict(client_id, identity)
        if code != ACCEPTED or identity is None:
            await connection.send(codec.connack(False, code))
            return False
        session, present, displaced = self.registry.open(connection, client_id, identity, clean=connect.clean)
        connection.start(session, connect)
        if displaced is not None:
            # [MQTT-3.1.4-2] the client already connected with this id is disconnected (dropped: it
            # may have stopped reading).
            log.info("client %s connected again: closing its previous connection", client_id)
            displaced.abort()
        await connection.send(codec.connack(present, ACCEPTED))
        # The session's outbox: what is in flight is re-sent (DUP), then the queue drains.
        self.fanout.outbox(client_id).attach(connection.send)
        self.connected.add(connection)
        metrics.connections.inc()
        if identity.kind == "device" and identity.username:
            await self.bridge.apply(await self.presence.change(identity.username, +1))
        return True

    def _session_verdict(self, client_id: str, identity: Identity) -> int:
        """Whether an admitted identity may have this client id's session now."""
        existing = self.registry.sessions.get(client_id)
        if self.registry.held_by_another(client_id, identity):
            metrics.auth_failures.inc()
            log.warning("MQTT CONNECT refused: client id %s belongs to another identity", client_id)
            return NOT_AUTHORIZED
        if identity.kind == "provision" and existing is not None and existing.connected:
            # A claim in progress keeps its connection: a second provisioning CONNECT with the same
            # client id is refused rather than taking it over (and receiving the claim's API key).
            metrics.connections_refused.labels("client_id_in_use").inc()
            log.warning("MQTT CONNECT refused: provisioning client id %s is in use", client_id)
            return BAD_CLIENT_ID
        if identity.kind == "device" and identity.username:
            others = self.presence.count(identity.username)
            if existing is not None and existing.connected and existing.identity == identity:
                others -= 1  # that connection is about to be taken over
            if others >= self.limits.max_connections_per_identity:
                metrics.connections_refused.labels("per_identity").inc()
                log.warning("MQTT CONNECT refused: device %s already has %d connections", identity.username, others)
                return UNAVAILABLE
        return ACCEPTED

    async def close(self, connection: Connection) -> None:
        """An admitted connection ended (DISCONNECT, dropped socket, keepalive, take-over)."""
        session = connection.session
        assert session is not None
        will = connection.will
        if will is not None:
            # Checked against the ACL (and routed topics) at CONNECT.
            log.info("client %s ended without DISCONNECT: publishing its will on %s", session.client_id, will.topic)
            self.fanout.publish(will.topic, will.payload, will.qos)
            if will.retain:
                self.fanout.retain(will.topic, will.payload, will.qos, bounded=True)
        self.connected.discard(connection)
        metrics.connections.dec()
        self.registry.closed(session, connection)
        identity = session.identity
        if identity is not None and identity.kind == "device" and identity.username:
            await self.bridge.apply(await self.presence.change(identity.username, -1))

    def subscribe(self, session: Session, topic_filter: str, qos: int) -> int:
        """One filter of a SUBSCRIBE: the granted QoS, or 0x80."""
        identity = session.identity
        if not valid_filter(topic_filter) or identity is None:
            return 0x80
        if not acl.may_subscribe(identity, session.client_id, topic_filter):
            metrics.acl_denials.labels("subscribe").inc()
            log.warning("ACL denied subscribe on %r for client %s", topic_filter, session.client_id)
            return 0x80
        self.fanout.subscribe(session.client_id, topic_filter, qos)
        return qos

    def _delivered(self, topic: str) -> None:
        """A client acknowledged a message under `channels/`: an IoTLock command was delivered."""
        task = asyncio.get_running_loop().create_task(iotlock_commands.delivered(topic), name="gatehouse.delivered")
        self.ctx.jobs.add(task)
        task.add_done_callback(self.ctx.jobs.discard)

    def _slow_subscriber(self, client_id: str) -> None:
        # An offline persistent session over its limit just loses the message (counted as
        # dropped); a connected client is cut off once, without waiting for it to read.
        session = self.registry.sessions.get(client_id)
        if session is None or session.connection is None or session.connection.closed:
            return
        metrics.slow_disconnects.inc()
        log.warning(
            "client %s stays over its outgoing queue limit (%d messages): disconnecting",
            client_id,
            self.limits.max_queued,
        )
        session.connection.abort()

    async def shutdown(self) -> None:
        """Stop listening, close every client (each close bounded, all at once), let each
        connection finish its own ending while the database and the session store are open."""
        self.running = False
        for server in self._servers:
            server.close()
        connections = list(self._accepted)
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        if connections:
            waits = [asyncio.ensure_future(c.done.wait()) for c in connections]
            _, pending = await asyncio.wait(waits, timeout=5)
            for w in pending:
                w.cancel()
        for outbox in self.fanout.outboxes.values():
            outbox.detach()
        await self.store.stop()
