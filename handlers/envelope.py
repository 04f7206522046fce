"""The Envelope: what a message is, whichever door it came through."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from handlers.errors import InvalidPayload

Source = Literal["mqtt", "http"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent a message: a device (by registry id and MQTT username) or nobody yet.

    `channels`: the IoTLock channels a lock gateway may use (its own and its mailboxes'); they change
    while it is connected (a mailbox added), so they are not part of who it is (`==`)."""

    kind: Literal["device", "provision", "anonymous", "user"]
    username: str = ""
    device_id: int | None = None
    owner_id: str | None = None
    channels: tuple[str, ...] = field(default=(), compare=False)


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
        return parse_json(self.payload)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _storable(value: Any) -> None:
    """PostgreSQL (text, jsonb) cannot hold NUL or unpaired surrogates; refuse them on both backends."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings may not contain \\u0000")
        value.encode("utf-8")  # UnicodeEncodeError (a ValueError) for an unpaired surrogate
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)


def parse_json(raw: bytes, what: str = "payload") -> Any:
    """Strict JSON for both doors: NaN, Infinity and 1e999 would be stored and served back as invalid JSON."""
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        if b"\\u" in raw or not raw.isascii():  # json.loads accepts UTF-8-encoded surrogates
            _storable(data)
        return data
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"{what} is not UTF-8 text", code="invalid_json") from exc
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise InvalidPayload(f"{what} is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:  # "[[[[..." deep enough to exhaust the parser: bad input, not a crash
        raise InvalidPayload(f"{what} is nested too deeply", code="invalid_json") from exc
