"""A routed PUBLISH through the bridge: a route's synchronous start, its commit future, its errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.bridge import Bridge
from broker.codec import Publish as Incoming
from broker.fanout import Fanout
from broker.registry import SessionRegistry
from broker.session import Session
from broker.sessions import SessionStore
from handlers.context import Context
from handlers.effects import Publish
from handlers.envelope import Envelope, Identity
from handlers.errors import GatehouseError, InvalidPayload
from handlers.routes import Route, Router

DEVICE = Identity("device", "esp32-aa", 1)


def error_reply(env: Envelope, params: list[str], exc: GatehouseError) -> Publish:
    return Publish(f"devices/{params[0]}/errors", exc.code.encode(), qos=1)


async def never(ctx: Context, env: Envelope, params: list[str]) -> list[Any]:
    raise AssertionError("a route with `start` is not run through its handler by the broker")


def bridge(start: Any) -> Bridge:
    fanout = Fanout(SessionStore(), max_queued=10, max_inflight=5, on_overflow=lambda _: None)
    router = Router([Route("devices/+/telemetry", never, error_reply, start)])
    return Bridge(
        Context(jwt_secret="x", writer=None), router, fanout, SessionRegistry(fanout, SessionStore(), expiry_seconds=60)
    )  # type: ignore[arg-type]


def publish(b: Bridge, payload: bytes = b"{}") -> asyncio.Future[Any]:
    session = Session("esp32-aa", DEVICE, persistent=False)
    packet = Incoming("devices/esp32-aa/telemetry", payload, 1, False, False, 7)
    found = b.routed(session, packet.topic)
    assert found is not None
    return asyncio.ensure_future(b.start(session, packet, found, "127.0.0.1:1"))


async def test_effects_hold_once_the_commit_is_done() -> None:
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    effect = Publish("devices/esp32-aa/telemetry", b"{}", qos=1)
    outcome = publish(bridge(lambda ctx, env, params: (commit, [effect])))
    await asyncio.sleep(0)
    assert not outcome.done()  # nothing is acknowledged before the commit
    commit.set_result(None)
    result = await outcome
    assert result.handled and result.effects == [effect]


async def test_a_refused_payload_is_answered_on_the_route_error_topic() -> None:
    def refuse(ctx: Context, env: Envelope, params: list[str]) -> Any:
        raise InvalidPayload("no", code="invalid_json")

    result = await publish(bridge(refuse))
    assert result.handled and [(e.topic, e.payload) for e in result.effects] == [
        ("devices/esp32-aa/errors", b"invalid_json")
    ]


@pytest.mark.parametrize("failure", [InvalidPayload("refused by storage", code="sample_refused"), OSError("disk full")])
async def test_a_failed_commit_is_refused_or_not_handled(failure: Exception) -> None:
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    outcome = publish(bridge(lambda ctx, env, params: (commit, [])))
    commit.set_exception(failure)
    result = await outcome
    if isinstance(failure, GatehouseError):
        assert result.handled and result.effects[0].payload == b"sample_refused"
    else:  # not handled: the connection closes without PUBACK and the device sends it again
        assert not result.handled


async def test_a_closed_connection_drops_the_outcome_and_the_commit_still_completes() -> None:
    commit: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    outcome = publish(bridge(lambda ctx, env, params: (commit, [])))
    await asyncio.sleep(0)
    outcome.cancel()
    commit.set_result(None)  # the callback sees the cancelled outcome and leaves it
    await asyncio.sleep(0)
    assert outcome.cancelled() and commit.done()
