"""Admission: whether a CONNECT is let in, and as whom. Nothing here touches another session.

amqtt 0.12.1 settled the session table before it authenticated a CONNECT (a refused CONNECT with
someone's client id could drop their subscriptions or connection); here admission comes first and
only an admitted CONNECT reaches the session registry.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from broker import acl, metrics
from broker.codec import Connect
from handlers.envelope import Identity

log = logging.getLogger(__name__)

ACCEPTED, BAD_PROTOCOL, BAD_CLIENT_ID, UNAVAILABLE, BAD_CREDENTIALS, NOT_AUTHORIZED = 0, 1, 2, 3, 4, 5
ANONYMOUS = Identity("anonymous")
PROVISION = Identity("provision", "provision")

Authenticate = Callable[[str, str], Awaitable[Identity | None]]


@dataclass(frozen=True, slots=True)
class Verdict:
    return_code: int
    identity: Identity | None = None
    client_id: str = ""


class Admission:
    def __init__(self, authenticate: Authenticate, *, allow_anonymous: bool, routed: Callable[[str], bool]) -> None:
        self._authenticate = authenticate
        self.allow_anonymous = allow_anonymous
        self._routed = routed

    async def admit(self, connect: Connect, peer: str) -> Verdict:
        if connect.protocol != "MQTT" or connect.level != 4:
            return Verdict(BAD_PROTOCOL)  # MQTT 3.1.1 only [MQTT-3.1.2-2]
        if not connect.client_id and not connect.clean:
            return Verdict(BAD_CLIENT_ID)  # [MQTT-3.1.3-8]
        identity = await self._identify(connect)
        if identity is None:
            metrics.auth_failures.inc()
            log.warning(
                "MQTT CONNECT refused: client %s username %r from %s", connect.client_id, connect.username, peer
            )
            return Verdict(NOT_AUTHORIZED)
        if identity.kind == "provision" and not connect.clean:
            # Claim replies carry an API key: never kept in a session queue or on disk.
            log.warning(
                "MQTT CONNECT refused: provisioning client %s asked for a persistent session", connect.client_id
            )
            return Verdict(NOT_AUTHORIZED)
        if connect.will is not None and not self._will_allowed(identity, connect):
            metrics.acl_denials.labels("will").inc()
            log.warning(
                "MQTT CONNECT refused: client %s will topic %r outside its ACL", connect.client_id, connect.will.topic
            )
            return Verdict(NOT_AUTHORIZED)
        client_id = connect.client_id or _generated(identity)
        if not acl.owns_client_id(identity, client_id):
            metrics.auth_failures.inc()
            log.warning(
                "MQTT CONNECT refused: device %s may not use client id %r (its username, or its username and -...)",
                identity.username,
                client_id,
            )
            return Verdict(BAD_CLIENT_ID)
        return Verdict(ACCEPTED, identity, client_id)

    async def _identify(self, connect: Connect) -> Identity | None:
        if connect.username == "provision":
            return PROVISION
        if connect.username and connect.password:
            return await self._authenticate(connect.username, connect.password)
        if not connect.username and self.allow_anonymous:
            return ANONYMOUS
        return None

    def _will_allowed(self, identity: Identity, connect: Connect) -> bool:
        # amqtt 0.12.1 never checked the will topic (and published the will past the ACL). A will
        # on a routed topic (telemetry, command results) would reach subscribers without its handler.
        assert connect.will is not None
        topic = connect.will.topic
        return not self._routed(topic) and acl.may_publish(identity, connect.client_id, topic)


def _generated(identity: Identity) -> str:
    # A clean session without a client id [MQTT-3.1.3-6]; a device's still starts with its username.
    suffix = secrets.token_hex(8)
    return f"{identity.username}-{suffix}" if identity.kind == "device" else f"auto-{suffix}"
