"""Keepalive: a client silent past 1.5 x its keepalive is disconnected [MQTT-3.1.2-24]."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Watchdog:
    """One timer per connection, re-armed lazily: a read only records the time (no timer churn)."""

    __slots__ = ("_handle", "_loop", "_on_expiry", "_timeout", "last_read")

    def __init__(self, timeout: float, on_expiry: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._on_expiry = on_expiry
        self.last_read = self._loop.time()
        self._handle: asyncio.TimerHandle | None = None
        if timeout > 0:
            self._handle = self._loop.call_later(timeout, self._check)

    def touch(self) -> None:
        self.last_read = self._loop.time()

    def _check(self) -> None:
        silent = self._loop.time() - self.last_read
        if silent >= self._timeout:
            self._handle = None
            self._on_expiry()
        else:
            self._handle = self._loop.call_later(self._timeout - silent, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def allowed_silence(keepalive: int, grace: float) -> float:
    """MQTT 3.1.1 §3.1.2.10: one and a half times the keepalive; 0 turns it off."""
    return keepalive * 1.5 + grace if keepalive > 0 else 0.0
