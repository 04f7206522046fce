"""What a handler asks the doors to do besides answering: publish to devices, drop a connection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int | None = 1  # None: each subscriber's own QoS
    retain: bool = False
    reply_to: str | None = None  # a client id: only the connection the request came in on gets it

    @classmethod
    def json(
        cls, topic: str, body: Any, qos: int | None = 1, retain: bool = False, reply_to: str | None = None
    ) -> Publish:
        return cls(topic, json.dumps(body, separators=(",", ":"), default=str).encode(), qos, retain, reply_to)


@dataclass(frozen=True, slots=True)
class DisconnectDevice:
    """Close every MQTT connection authenticated as this device username (e.g. its key was replaced)."""

    username: str
    reason: str
    forget: bool = False  # the device is gone: drop its sessions and retained messages too


@dataclass(frozen=True, slots=True)
class GrantChannels:
    """An IoTLock gateway's channels changed: every session of `identity.username` may use exactly
    `identity.channels` from now on, and its session `identity.username` (created, persistent and
    offline, if the gateway never connected) is subscribed to `subscribe` at QoS 1 and unsubscribed
    from `unsubscribe`: the server connects a channel to a thing."""

    identity: Any  # handlers.envelope.Identity (not imported: effects stay below the envelope)
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Take a message not yet sent out of a client's session queue (an IoTLock command that expired)."""

    client_id: str
    topic: str


Effect = Publish | DisconnectDevice | GrantChannels | Withdraw


class Effector(Protocol):
    """Carries effects out; the broker adapter implements it."""

    async def apply(self, effects: list[Effect]) -> None: ...


class NullEffector:
    """Used when no broker runs (CLI commands, unit tests): effects are dropped."""

    async def apply(self, effects: list[Effect]) -> None:
        return None
