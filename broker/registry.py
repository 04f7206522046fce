"""The session registry: which session a CONNECT gets, take-over, expiry, and what survives a restart.

A client id belongs to the identity holding its session: another identity may neither take it
over (and read what is queued for it) nor kick its connection off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from broker.fanout import Fanout
from broker.session import Session
from broker.sessions import SessionStore
from handlers.envelope import Identity

if TYPE_CHECKING:
    from broker.connection import Connection

log = logging.getLogger(__name__)


class SessionRegistry:
    def __init__(self, fanout: Fanout, store: SessionStore, *, expiry_seconds: float) -> None:
        self.fanout = fanout
        self.store = store
        self.expiry_seconds = expiry_seconds
        self.sessions: dict[str, Session] = fanout.subscribers

    async def load(self) -> None:
        """The persistent sessions the last run left, each offline and counting towards its expiry."""
        for stored in await self.store.load():
            session = Session(stored.client_id, stored.identity, persistent=True)
            self.fanout.register(session)
            for topic_filter, qos in stored.subscriptions.items():
                self.fanout.subs.add(topic_filter, stored.client_id, qos)
            outbox = self.fanout.outbox(stored.client_id)
            for msg in stored.messages:
                if not outbox.put(msg):  # over the queue limit (lowered since?): dropped for good
                    self.store.acked(msg)
            self._arm_expiry(session)

    def held_by_another(self, client_id: str, identity: Identity) -> bool:
        """Whether the client id's session belongs to another identity that keeps it.

        Devices `foo` and `foo-bar` both own client id `foo-bar-1` (admission checked each); the
        longer username is the more specific owner and takes it over, so `foo` cannot hold (and
        lock out) a client id of `foo-bar`'s; the reverse is refused."""
        existing = self.sessions.get(client_id)
        if existing is None or existing.identity is None or existing.identity == identity:
            return False
        holder = existing.identity
        if identity.kind == holder.kind == "device" and identity.username and holder.username:
            return len(identity.username) <= len(holder.username)
        return True

    def open(
        self, connection: Connection, client_id: str, identity: Identity, *, clean: bool
    ) -> tuple[Session, bool, Connection | None]:
        """Attach an admitted connection to its session: (session, session present, the connection
        it displaces, which the caller closes [MQTT-3.1.4-2])."""
        existing = self.sessions.get(client_id)
        displaced = existing.connection if existing is not None else None
        if existing is not None:
            existing.connection = None  # whatever the displaced connection does next, it is not this session's
            if clean or not existing.persistent or existing.identity != identity:
                # A clean session's state ends with it [MQTT-3.1.2-6]: nothing of it is resumed;
                # nor is anything of a session another identity held.
                self.forget(client_id)
                existing = None
        if existing is None:
            session = Session(client_id, identity, persistent=not clean)
            self.fanout.register(session)
            present = False
        else:
            session, present = existing, True
            session.identity = identity
            if session.expiry is not None:
                session.expiry.cancel()
                session.expiry = None
        session.connection = connection
        return session, present, displaced

    def ensure(self, client_id: str, identity: Identity) -> None:
        """A session for `client_id` before its client ever connected (persistent, offline, counting
        towards its expiry), so that what is published to it waits there. One that exists is kept."""
        if client_id in self.sessions:
            return
        session = Session(client_id, identity, persistent=True)
        self.fanout.register(session)
        self.fanout.persist(client_id)
        self._arm_expiry(session)

    def closed(self, session: Session, connection: Connection) -> None:
        """A connection ended; nothing happens if another connection has taken the session over."""
        if session.connection is not connection:
            return
        session.connection = None
        self.fanout.disconnected(session.client_id)
        if session.persistent and session.client_id in self.sessions:
            self._arm_expiry(session)

    def forget(self, client_id: str, *, purge: bool = False) -> None:
        session = self.sessions.get(client_id)
        if session is not None and session.expiry is not None:
            session.expiry.cancel()
        self.fanout.forget(client_id, purge=purge)

    def _arm_expiry(self, session: Session) -> None:
        def expire() -> None:
            if self.sessions.get(session.client_id) is session and not session.connected:
                log.info("persistent session %s expired", session.client_id)
                session.expiry = None
                self.forget(session.client_id)

        session.expiry = asyncio.get_running_loop().call_later(self.expiry_seconds, expire)
