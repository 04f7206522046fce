"""Presence: a device is online from its first connection to the end of its last one."""

from __future__ import annotations

import logging
from collections import Counter

from handlers.effects import Effect
from handlers.presence import device_offline, device_online

log = logging.getLogger(__name__)


class Presence:
    def __init__(self) -> None:
        self._online: Counter[str] = Counter()

    def count(self, username: str) -> int:
        return self._online[username]

    async def change(self, username: str, delta: int) -> list[Effect]:
        """Count a connection in (+1) or out (-1); the effects to carry out when presence flips."""
        before = self._online[username]
        after = before + delta
        if after > 0:
            self._online[username] = after
        else:
            self._online.pop(username, None)
        try:
            if before == 0 and after > 0:
                return await device_online(username)
            if before > 0 and after <= 0:
                return await device_offline(username)
        except Exception:
            log.exception("presence update failed for %s", username)
        return []
