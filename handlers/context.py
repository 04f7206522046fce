"""What handlers need from the running process, handed in by the composition root."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from handlers.effects import Effector, NullEffector
from handlers.telemetry_writer import TelemetryWriter


@dataclass(frozen=True)
class Links:
    """Addresses devices are told about in a claim response."""

    public_url: str = ""
    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    mqtts_port: int = 8883
    ws_port: int = 8083


@dataclass
class Context:
    jwt_secret: str
    writer: TelemetryWriter
    links: Links = field(default_factory=Links)
    effector: Effector = field(default_factory=NullEffector)
    access_token_minutes: float = 15
    refresh_token_days: float = 30
    history_page_max: int = 1000
    # Commands awaiting their device's answer in this process: req_id -> future of the answer.
    command_waiters: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    # Access tokens recently verified: token -> (Principal, monotonic expiry); see accounts.
    principals: dict[str, tuple[Any, float]] = field(default_factory=dict)
