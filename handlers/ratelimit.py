"""Abuse limits: per client address and per account budgets for the flows a stranger can call.

Budgets are moving windows kept in this process's memory (the `limits` library): a restart
forgets them, and N processes behind a load balancer each allow the budget. A flow adds one line:

    await ctx.limiter.attempt("password_reset", account=email, address=address)   # every request counts

or, where only failures count (login, 2FA codes), wraps its check:

    async with ctx.limiter.guard("login", account=username, address=address) as attempt:
        ...
        if wrong:
            attempt.fail()
            raise Unauthorized(...)

An account whose failure budget is spent is locked for `lockout_seconds`. Attempts still being
checked count against the budget, so sixty concurrent guesses get no further than sixty in a row.
Accounts are keyed by the name as typed (lower-cased), so an unknown username is limited exactly
like a known one and the answer tells nothing about which it is.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from handlers.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Budget:
    """One flow's budgets, e.g. Budget("30 per 10 minutes", "5 per 15 minutes"); "" is unlimited."""

    per_address: str = ""
    per_account: str = ""


class Attempt:
    """What a guarded attempt turned out to be; `fail()` counts it against the budgets."""

    failed = False

    def fail(self) -> None:
        self.failed = True


Key = tuple[RateLimitItem, str, str, str]  # limit, flow, "address" | "account", who


class _Storage(MemoryStorage):
    """limits 5.8.0's expiry sweep lists the keys, then awaits a thread per key and reads
    `events[key]`: a key `clear()`ed in between killed the sweep with KeyError. Clearing empties
    the key's entries instead, and the sweep drops the empty key itself."""

    async def clear(self, key: str) -> None:
        self.storage.pop(key, None)
        self.expirations.pop(key, None)
        if key in self.events:
            self.events[key] = []


class RateLimiter:
    def __init__(self, budgets: dict[str, Budget] | None = None, lockout_seconds: float = 900) -> None:
        self._limits: dict[str, tuple[RateLimitItem | None, RateLimitItem | None]] = {
            flow: (parse(b.per_address) if b.per_address else None, parse(b.per_account) if b.per_account else None)
            for flow, b in (budgets or {}).items()
        }
        self._lock = parse(f"1 per {max(1, math.ceil(lockout_seconds))} seconds") if lockout_seconds > 0 else None
        self._window = MovingWindowRateLimiter(_Storage())
        self._inflight: Counter[tuple[str, ...]] = Counter()  # (flow, kind, who) -> attempts being checked

    def _keys(self, flow: str, account: str | None, address: str | None) -> list[Key]:
        by_address, by_account = self._limits.get(flow, (None, None))
        keys = []
        if by_address is not None and address:
            keys.append((by_address, flow, "address", address))
        if by_account is not None and account:
            keys.append((by_account, flow, "account", account.strip().lower()))
        return keys

    async def check(
        self, flow: str, *, account: str | None = None, address: str | None = None, _in_flight: bool = False
    ) -> None:
        """Raise RateLimited (with seconds to wait) if the account is locked or a budget is spent."""
        if self._lock is not None and account:
            key = account.strip().lower()
            if not await self._window.test(self._lock, flow, "locked", key):
                raise RateLimited(
                    "too many failed attempts for this account; try again later",
                    code="account_locked",
                    retry_after=await self._wait(self._lock, flow, "locked", key),
                )
        waits = []
        for key in self._keys(flow, account, address):
            item, *ids = key
            # Attempts being checked count too (this one among them when it is `_in_flight`).
            cost = self._inflight[tuple(ids)] + (0 if _in_flight else 1)
            if not await self._window.test(item, *ids, cost=max(1, cost)):
                waits.append(await self._wait(item, *ids))
        if waits:
            raise RateLimited("too many requests; try again later", retry_after=max(waits))

    @asynccontextmanager
    async def guard(self, flow: str, *, account: str, address: str | None = None) -> AsyncIterator[Attempt]:
        """Check, run the attempt, then count it if it `fail()`ed or forget the account's failures if
        it succeeded (ended without an exception)."""
        keys = [tuple(ids) for _, *ids in self._keys(flow, account, address)]
        # Counted before the check, which may wait on the storage: concurrent attempts see each other.
        self._inflight.update(keys)
        attempt = Attempt()
        succeeded = False
        try:
            await self.check(flow, account=account, address=address, _in_flight=True)
            yield attempt
            succeeded = not attempt.failed
        finally:
            self._inflight.subtract(keys)
            for key in keys:
                if self._inflight[key] <= 0:
                    del self._inflight[key]
            if attempt.failed:
                await self.failed(flow, account=account, address=address)
            elif succeeded:
                await self.succeeded(flow, account=account)

    async def failed(self, flow: str, *, account: str | None = None, address: str | None = None) -> None:
        """Count one failure; the account is locked once its budget of failures is spent."""
        for key in self._keys(flow, account, address):
            item, *ids = key
            await self._window.hit(item, *ids)
            if ids[1] == "account" and self._lock is not None and not await self._window.test(item, *ids):
                await self._window.hit(self._lock, flow, "locked", ids[2])
                await self._window.clear(item, *ids)  # the lock counts from now, with a fresh budget after

    async def succeeded(self, flow: str, *, account: str) -> None:
        """The account proved itself: forget its failures (the address's stay counted)."""
        for item, *ids in self._keys(flow, account, None):
            await self._window.clear(item, *ids)

    async def attempt(self, flow: str, *, account: str | None = None, address: str | None = None) -> None:
        """For flows where every request counts: check, then count this one."""
        await self.check(flow, account=account, address=address)
        for item, *ids in self._keys(flow, account, address):
            await self._window.hit(item, *ids)

    async def _wait(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self._window.get_window_stats(item, *identifiers)
        if stats.remaining > 0:  # refused for attempts still in flight: they end within seconds
            return 1
        return max(1, math.ceil(stats.reset_time - time.time()))
