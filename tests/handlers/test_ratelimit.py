"""Abuse budgets: per address, per account, lockout after failures, Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from handlers.errors import RateLimited
from handlers.ratelimit import Budget, RateLimiter
from tests.support import eventually


async def refused(coro: object) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await coro  # type: ignore[misc]
    assert caught.value.status == 429 and caught.value.retry_after >= 1
    return caught.value


async def test_failures_lock_the_account_whatever_the_address() -> None:
    limiter = RateLimiter({"login": Budget("", "3 per minute")}, lockout_seconds=600)
    for i in range(3):
        await limiter.check("login", account="Alice@Example.com", address=f"10.0.0.{i}")
        await limiter.failed("login", account="alice@example.com", address=f"10.0.0.{i}")
    locked = await refused(limiter.check("login", account=" alice@example.com", address="10.9.9.9"))
    assert locked.code == "account_locked" and 590 <= locked.retry_after <= 600
    await limiter.check("login", account="bob@example.com", address="10.0.0.1")  # others are not
    await limiter.check("two_factor", account="alice@example.com")  # nor other flows


async def test_success_forgets_the_account_failures() -> None:
    limiter = RateLimiter({"login": Budget("", "3 per minute")})
    for _ in range(5):
        await limiter.failed("login", account="carol@example.com")
        await limiter.failed("login", account="carol@example.com")
        await limiter.succeeded("login", account="carol@example.com")
        await limiter.check("login", account="carol@example.com")


async def test_address_budget_covers_every_account() -> None:
    limiter = RateLimiter({"login": Budget("4 per minute", "")})
    for i in range(4):
        await limiter.check("login", account=f"user{i}@example.com", address="192.0.2.7")
        await limiter.failed("login", account=f"user{i}@example.com", address="192.0.2.7")
    limited = await refused(limiter.check("login", account="new@example.com", address="192.0.2.7"))
    assert limited.code == "rate_limited" and limited.retry_after <= 60
    await limiter.check("login", account="new@example.com", address="192.0.2.8")


async def test_attempt_counts_every_request() -> None:
    limiter = RateLimiter({"password_reset": Budget("10 per hour", "2 per hour")})
    await limiter.attempt("password_reset", account="dave@example.com", address="192.0.2.1")
    await limiter.attempt("password_reset", account="dave@example.com", address="192.0.2.2")
    limited = await refused(limiter.attempt("password_reset", account="dave@example.com", address="192.0.2.3"))
    assert limited.code == "rate_limited" and limited.retry_after > 60


async def test_a_flow_without_budget_is_not_limited() -> None:
    limiter = RateLimiter()
    for _ in range(100):
        await limiter.attempt("registration", account="x", address="y")
        await limiter.failed("login", account="x", address="y")
    await limiter.check("login", account="x", address="y")


async def test_concurrent_attempts_count_while_in_flight() -> None:
    """Sixty guesses at once get no further than sixty in a row: attempts being checked count."""
    limiter = RateLimiter({"login": Budget("", "5 per minute")})
    gate = asyncio.Event()
    inside: list[int] = []
    refusals: list[RateLimited] = []

    async def guess(i: int) -> None:
        try:
            async with limiter.guard("login", account="erin@example.com", address="192.0.2.9") as attempt:
                inside.append(i)
                await gate.wait()
                attempt.fail()
        except RateLimited as exc:
            refusals.append(exc)

    tasks = [asyncio.create_task(guess(i)) for i in range(60)]

    async def all_settled() -> bool:
        return len(inside) + len(refusals) == 60

    await eventually(all_settled)
    gate.set()
    await asyncio.gather(*tasks)
    assert len(inside) == 5 and len(refusals) == 55
    assert (await refused(limiter.check("login", account="erin@example.com"))).code == "account_locked"


async def test_a_guarded_success_clears_and_an_error_counts_nothing() -> None:
    limiter = RateLimiter({"login": Budget("", "2 per minute")})
    for _ in range(3):
        async with limiter.guard("login", account="fay@example.com") as attempt:
            attempt.fail()
        async with limiter.guard("login", account="fay@example.com"):
            pass  # success: the failure above is forgotten
    for _ in range(5):
        with pytest.raises(ZeroDivisionError):
            async with limiter.guard("login", account="fay@example.com"):
                raise ZeroDivisionError  # a bug, not a wrong password
    await limiter.check("login", account="fay@example.com")


async def test_clearing_while_expired_entries_are_swept_loses_nothing() -> None:
    """limits' in-memory sweep lists the keys, then awaits a thread per key: an account cleared in
    between (a login that succeeded) made the sweep task die with KeyError (seen once in CI)."""
    limiter = RateLimiter({"login": Budget("", "5 per minute")})
    storage = limiter._window.storage
    for who in ("a", "b", "c"):
        await limiter.failed("login", account=who)  # the first hit starts a sweep
    sweep = storage.timer
    assert sweep is not None
    await asyncio.sleep(0)  # the sweep is now waiting on its thread for the first key
    await limiter.succeeded("login", account="b")
    await limiter.succeeded("login", account="c")
    await sweep
    assert sweep.exception() is None
    for who in ("a", "b", "c"):
        await limiter.check("login", account=who)
