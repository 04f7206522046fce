"""What handlers need from the running process, handed in by the composition root."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any

from handlers.effects import Effector, NullEffector
from handlers.outbox import Outbox
from handlers.ratelimit import RateLimiter
from handlers.telemetry_writer import TelemetryWriter


@dataclass(frozen=True)
class Links:
    """Addresses handed out: to devices in a claim response, to users in mail."""

    # Configured (http.public_url) or derived from the HTTP listener; never the request's Host
    # header, which the client chooses.
    public_url: str = "http://localhost:8080"
    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    mqtts_port: int = 8883
    ws_port: int = 8083


@dataclass(frozen=True)
class UserPolicy:
    """How long mailed keys live, and where their links point (settings `users.*`)."""

    portal_url: str = "http://localhost:8080"
    activation_days: float = 7
    email_change_days: float = 7
    password_reset_hours: float = 24
    two_factor_code_minutes: float = 10
    totp_issuer: str = "Gatehouse"


@dataclass(frozen=True)
class GatewayLitePolicy:
    """Settings `gateway_lite.*`."""

    access_domain: str = "p2p.gatehouse.local"
    activation_hours: float = 24
    import_max_bytes: int = 64 * 1024 * 1024
    import_batch_rows: int = 500


@dataclass(frozen=True)
class IotLockPolicy:
    """Settings `iotlock.*`."""

    command_expiry_seconds: float = 86400
    sweep_seconds: float = 1.0


@dataclass
class Context:
    jwt_secret: str
    writer: TelemetryWriter
    links: Links = field(default_factory=Links)
    effector: Effector = field(default_factory=NullEffector)
    access_token_minutes: float = 15
    refresh_token_days: float = 30
    history_page_max: int = 1000
    # Mail and SMS go through here (handlers/mail.py, handlers/sms.py); default: outbox and log only.
    outbox: Outbox = field(default_factory=Outbox)
    users: UserPolicy = field(default_factory=UserPolicy)
    gateway_lite: GatewayLitePolicy = field(default_factory=GatewayLitePolicy)
    # Per-key locks while in use (held only by their users: a weak dictionary forgets idle ones).
    locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(default_factory=weakref.WeakValueDictionary)
    # Background jobs (Gateway Lite imports): kept referenced until done, cancelled at shutdown.
    jobs: set[asyncio.Task[Any]] = field(default_factory=set)
    # Abuse budgets per flow (handlers/ratelimit.py); default: none.
    limiter: RateLimiter = field(default_factory=RateLimiter)
    # Signals while waited for (IoTLock commands: "the command has an outcome"); see `signal`.
    signals: weakref.WeakValueDictionary[str, asyncio.Event] = field(default_factory=weakref.WeakValueDictionary)
    iotlock: IotLockPolicy = field(default_factory=lambda: IotLockPolicy())
    # Commands awaiting their device's answer in this process: req_id -> future of the answer.
    command_waiters: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    # Access tokens recently verified: token -> (Principal, monotonic expiry); see accounts.
    principals: dict[str, tuple[Any, float]] = field(default_factory=dict)

    def lock(self, key: str) -> asyncio.Lock:
        """The lock for `key`, the same one for every caller while anyone holds or awaits it."""
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = asyncio.Lock()
        return lock

    def signal(self, key: str) -> asyncio.Event:
        """The event for `key`, the same one for every waiter while anyone waits on it."""
        event = self.signals.get(key)
        if event is None:
            event = self.signals[key] = asyncio.Event()
        return event
