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

    @classmethod
    def json(cls, topic: str, body: Any, qos: int | None = 1, retain: bool = False) -> Publish:
        return cls(topic, json.dumps(body, separators=(",", ":"), default=str).encode(), qos, retain)


@dataclass(frozen=True, slots=True)
class DisconnectDevice:
    """Close every MQTT connection authenticated as this device username (e.g. its key was replaced)."""

    username: str
    reason: str


Effect = Publish | DisconnectDevice


class Effector(Protocol):
    """Carries effects out; the broker adapter implements it."""

    async def apply(self, effects: list[Effect]) -> None: ...


class NullEffector:
    """Used when no broker runs (CLI commands, unit tests): effects are dropped."""

    async def apply(self, effects: list[Effect]) -> None:
        return None
