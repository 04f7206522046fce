"""The bridge between the broker and the handler pipeline: an incoming PUBLISH becomes an
Envelope for its route (or is forwarded), and handler effects become publishes and disconnects."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker import acl, metrics
from broker.codec import Publish as Incoming
from broker.fanout import Fanout
from broker.registry import SessionRegistry
from broker.session import Session
from handlers.context import Context
from handlers.effects import DisconnectDevice, Effect, GrantChannels, Publish, Withdraw
from handlers.envelope import Envelope
from handlers.errors import GatehouseError
from handlers.routes import Route, Router

if TYPE_CHECKING:
    from broker.connection import Connection

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """What a routed PUBLISH's handler came to: its effects, or not handled (not to be acknowledged)."""

    handled: bool
    effects: list[Effect] = field(default_factory=list)


class Bridge:
    def __init__(self, ctx: Context, router: Router, fanout: Fanout, registry: SessionRegistry) -> None:
        self.ctx = ctx
        self.router = router
        self.fanout = fanout
        self.registry = registry

    def routed(self, session: Session, topic: str) -> tuple[Route, list[str]] | None:
        """The route of an allowed PUBLISH on a routed topic. None otherwise: the PUBLISH goes to
        `forward`, which checks the ACL (once: a topic no handler owns is not checked here) and drops
        a denied one."""
        found = self.router.match(topic)
        identity = session.identity
        if found is None or identity is None or not acl.may_publish(identity, session.client_id, topic):
            return None
        return found

    def forward(self, session: Session, packet: Incoming) -> None:
        """A PUBLISH on a topic no handler owns: to its subscribers, if the client may publish there."""
        identity = session.identity
        if identity is None or not acl.may_publish(identity, session.client_id, packet.topic):
            # Dropped and counted; MQTT 3.1.1 has no negative acknowledgement.
            metrics.acl_denials.labels("publish").inc()
            log.warning("ACL denied publish on %r for client %s", packet.topic, session.client_id)
            return
        # Delivery QoS is the lower of the publish and the subscription QoS (amqtt 0.12.1 used
        # the subscription's).
        self.fanout.publish(packet.topic, packet.payload, packet.qos)
        if packet.retain:
            self.fanout.retain(packet.topic, packet.payload, packet.qos, bounded=True)

    def start(
        self, session: Session, packet: Incoming, found: tuple[Route, list[str]], peer: str
    ) -> Awaitable[Outcome]:
        """Start a routed PUBLISH's handler; what it returns gives the Outcome. A route with a
        synchronous `start` (telemetry) waits for its commit as one future, not as a task with a
        chain of coroutines: tens of thousands of publishes may be in flight at once."""
        route, params = found
        assert session.identity is not None
        env = Envelope(
            source="mqtt",
            topic=packet.topic,
            identity=session.identity,
            payload=packet.payload,
            qos=packet.qos,
            client_id=session.client_id,
            remote=peer,
        )
        if route.start is None:
            return self._run(env, route, params)
        outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        try:
            done, effects = route.start(self.ctx, env, params)
        except Exception as exc:
            outcome.set_result(self._failed(env, route, params, exc))
            return outcome
        done.add_done_callback(functools.partial(self._settle, outcome, env, route, params, effects))
        return outcome

    def _settle(
        self,
        outcome: asyncio.Future[Outcome],
        env: Envelope,
        route: Route,
        params: list[str],
        effects: list[Effect],
        done: asyncio.Future[Any],
    ) -> None:
        if outcome.done():  # the connection closed meanwhile
            return
        if done.cancelled():
            outcome.set_result(Outcome(False))
        elif (exc := done.exception()) is not None:
            outcome.set_result(self._failed(env, route, params, exc))
        else:
            outcome.set_result(Outcome(True, effects))

    async def _run(self, env: Envelope, route: Route, params: list[str]) -> Outcome:
        try:
            return Outcome(True, await route.handler(self.ctx, env, params))
        except Exception as exc:
            return self._failed(env, route, params, exc)

    def _failed(self, env: Envelope, route: Route, params: list[str], exc: BaseException) -> Outcome:
        if isinstance(exc, GatehouseError):
            metrics.messages_refused.inc()
            log.warning("client %s: refused payload on %s: %.200s", env.client_id, env.topic, exc.detail)
            return Outcome(True, [route.on_error(env, params, exc)])
        metrics.handler_failures.inc()
        log.error("handler failed for client %s on %s: closing without PUBACK", env.client_id, env.topic, exc_info=exc)
        return Outcome(False)

    # --- effects ------------------------------------------------------------------------------

    async def apply(self, effects: list[Effect], origin: Connection | None = None) -> None:
        """Carry out handler effects: publish to subscribers, drop device connections.

        A reply (`Publish.reply_to`) goes only to the connection the request came in on, and only
        while it is still that client id's connection: a claim's API key never reaches a client
        that took the id over meanwhile, nor a session queue.
        """
        for effect in effects:
            if isinstance(effect, Publish):
                if effect.reply_to is not None:
                    session = self.registry.sessions.get(effect.reply_to)
                    if origin is not None and session is not None and session.connection is origin:
                        self.fanout.publish(effect.topic, effect.payload, effect.qos, only=effect.reply_to)
                    continue
                self.fanout.publish(effect.topic, effect.payload, effect.qos)
                if effect.retain:
                    self.fanout.retain(effect.topic, effect.payload, effect.qos or 0)
            elif isinstance(effect, DisconnectDevice):
                await self.disconnect_device(effect.username, effect.reason, forget=effect.forget)
            elif isinstance(effect, GrantChannels):
                self.grant_channels(effect)
            elif isinstance(effect, Withdraw):
                self.fanout.withdraw(effect.client_id, effect.topic)

    def grant_channels(self, grant: GrantChannels) -> None:
        identity = grant.identity
        for client_id, session in self.registry.sessions.items():
            held = session.identity
            if held is not None and held == identity:  # equal whatever the channels (not compared)
                session.identity = identity
                self.fanout.persist(client_id)
        client_id = identity.username
        self.registry.ensure(client_id, identity)
        for topic_filter in grant.subscribe:
            self.fanout.subscribe(client_id, topic_filter, 1)
        for topic_filter in grant.unsubscribe:
            self.fanout.unsubscribe(client_id, topic_filter)

    async def disconnect_device(self, username: str, reason: str, *, forget: bool = False) -> int:
        """Close the device's connections; with `forget` (the device was deleted) also drop its
        persistent sessions and the retained messages under its topics, so a device created later
        with the same username inherits nothing."""
        closed = 0
        for client_id, session in list(self.registry.sessions.items()):
            identity = session.identity
            if not (identity and identity.kind == "device" and identity.username == username):
                continue
            connection = session.connection
            if forget:
                session.persistent = False  # its end is final
                self.registry.forget(client_id, purge=True)
            if connection is not None:
                log.info("closing MQTT connection of %s (client %s): %s", username, client_id, reason)
                await connection.close()
                closed += 1
        if forget:
            self.fanout.clear_retained(f"devices/{username}/")
        return closed
