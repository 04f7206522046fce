"""A connection's packets finished in arrival order, while handler work may run ahead.

A routed PUBLISH (telemetry waits for its commit before the PUBACK) starts its handler at once and
the reader goes on; everything after it — another PUBLISH, a SUBSCRIBE, a PUBREL, a DISCONNECT —
is finished only after it, in the order the client sent them [MQTT-4.6.0]. At most `limit`
packets are in hand per connection; then the reader stops reading (TCP backpressure).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Finish = Callable[[Any], Awaitable[bool]]  # False: stop (the connection is being closed)


class Pipeline:
    def __init__(self, limit: int, name: str) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._items: deque[tuple[asyncio.Future[Any] | None, Finish]] = deque()
        self._wake = asyncio.Event()
        self._busy = 0
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self.stopped = False

    def idle(self) -> bool:
        """Nothing in hand: a packet may be finished right away, inline."""
        return self._busy == 0

    async def add(self, work: Awaitable[Any] | None, finish: Finish) -> None:
        """Start `work` now (if any); `finish(result)` runs after every earlier packet's."""
        await self._slots.acquire()
        if self.stopped:
            self._slots.release()
            if work is not None and asyncio.iscoroutine(work):
                work.close()
            return
        future = asyncio.ensure_future(work) if work is not None else None
        self._items.append((future, finish))
        self._busy += 1
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"gatehouse.pipeline:{self._name}")

    async def _run(self) -> None:
        while not self.stopped:
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            future, finish = self._items.popleft()
            try:
                result = await future if future is not None else None
                if not await finish(result):
                    self.stop()
            except asyncio.CancelledError:
                raise
            except ConnectionError:  # the client went away while we answered
                self.stop()
            except Exception:
                log.exception("pipeline %s: finishing a packet failed", self._name)
                self.stop()
            finally:
                self._busy -= 1
                self._slots.release()

    def stop(self) -> None:
        """Drop what is not finished yet (the connection is closing: nothing more is answered)."""
        self.stopped = True
        self._wake.set()
        for future, _ in self._items:
            if future is not None:
                future.cancel()
        self._busy -= len(self._items)
        for _ in self._items:
            self._slots.release()
        self._items.clear()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
