"""The Envelope: what a message is, whichever door it came through."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from handlers.errors import InvalidPayload

Source = Literal["mqtt", "http"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent a message: a device (by registry id and MQTT username) or nobody yet."""

    kind: Literal["device", "provision", "anonymous", "user"]
    username: str = ""
    device_id: int | None = None
    owner_id: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    source: Source
    topic: str
    identity: Identity
    payload: bytes
    qos: int = 0
    client_id: str = ""
    remote: str = ""
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def json(self) -> Any:
        """The payload as JSON, or InvalidPayload naming what is wrong."""
        try:
            return json.loads(self.payload)
        except UnicodeDecodeError as exc:
            raise InvalidPayload("payload is not UTF-8 text", code="invalid_json") from exc
        except json.JSONDecodeError as exc:
            raise InvalidPayload(
                f"payload is not valid JSON: {exc.msg} at position {exc.pos}", code="invalid_json"
            ) from exc
