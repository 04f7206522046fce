"""The MQTT routes: one explicit list of topic patterns and the handler each one reaches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from handlers import iotlock_commands
from handlers.commands import CommandResult, record_result
from handlers.context import Context
from handlers.effects import Effect, Publish
from handlers.envelope import Envelope
from handlers.errors import Forbidden, GatehouseError, invalid
from handlers.provisioning import ClaimRequest, claim_device
from handlers.telemetry import ingest_telemetry, start_telemetry

Handler = Callable[[Context, Envelope, list[str]], Awaitable[list[Effect]]]
# A synchronous start for the hottest route: validates (raising GatehouseError) and returns a
# future and the effects that hold once it is done. No task or coroutine per message in flight.
Starter = Callable[[Context, Envelope, list[str]], tuple[asyncio.Future[Any], list[Effect]]]


async def on_telemetry(ctx: Context, env: Envelope, params: list[str]) -> list[Effect]:
    return await ingest_telemetry(ctx, env)


def start_on_telemetry(ctx: Context, env: Envelope, params: list[str]) -> tuple[asyncio.Future[Any], list[Effect]]:
    return start_telemetry(ctx, env)


async def on_command_result(ctx: Context, env: Envelope, params: list[str]) -> list[Effect]:
    try:
        res = CommandResult.model_validate(env.json())
    except ValidationError as exc:
        raise invalid(exc) from exc
    return await record_result(ctx, env, params[0], params[1], res)


async def on_claim(ctx: Context, env: Envelope, params: list[str]) -> list[Effect]:
    client_id = params[0]
    if env.identity.kind != "provision" or client_id != env.client_id:
        raise Forbidden("claims are made on provisioning/<own client id>/claim", code="wrong_client")
    try:
        data = env.json()
        req = ClaimRequest.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from exc
    body, effects = await claim_device(ctx, req, source="mqtt", remote=env.remote)
    return [*effects, Publish.json(f"provisioning/{client_id}/accepted", body, qos=1, reply_to=client_id)]


async def on_lock_answer(ctx: Context, env: Envelope, params: list[str]) -> list[Effect]:
    return await iotlock_commands.record_answer(ctx, env, params[0], params[1])


async def on_lock_events(ctx: Context, env: Envelope, params: list[str]) -> list[Effect]:
    return await iotlock_commands.record_events(ctx, env, params[0])


def claim_rejected(env: Envelope, params: list[str], exc: GatehouseError) -> Publish:
    body = {**exc.body(), "status": exc.status}
    return Publish.json(f"provisioning/{params[0]}/rejected", body, qos=1, reply_to=params[0])


def device_error(env: Envelope, params: list[str], exc: GatehouseError) -> Publish:
    # The detail may quote the device's own input: cut short.
    body = {"topic": env.topic, "detail": exc.detail[:500], "code": exc.code, "errors": exc.errors[:20]}
    return Publish.json(f"devices/{params[0]}/errors", body, qos=1)


def sender_error(env: Envelope, params: list[str], exc: GatehouseError) -> Publish:
    """A refusal on the sender's own errors topic (an IoTLock gateway: devices/<thing id>/errors)."""
    return device_error(env, [env.identity.username], exc)


@dataclass(frozen=True)
class Route:
    pattern: str
    handler: Handler
    on_error: Callable[[Envelope, list[str], GatehouseError], Publish]
    start: Starter | None = None  # when set, the broker uses it instead of `handler`

    @cached_property
    def levels(self) -> list[str]:
        return self.pattern.split("/")


ROUTES = [
    Route("devices/+/telemetry", on_telemetry, device_error, start_on_telemetry),
    Route("devices/+/commands/res/+", on_command_result, device_error),
    Route("provisioning/+/claim", on_claim, claim_rejected),
    Route("channels/+/messages/res/events", on_lock_events, sender_error),
    Route("channels/+/messages/res/+", on_lock_answer, sender_error),
]


class Router:
    """Finds the route for a topic; `+` matches one level and is handed to the handler.

    Routes are indexed by (levels, first level, last level); a route ending in `+` is indexed
    under `+` and tried after the route ending in the topic's literal last level, if any.
    """

    def __init__(self, routes: list[Route]) -> None:
        self._by_shape: dict[tuple[int, str, str], Route] = {}
        for route in routes:
            levels = route.levels
            shape = (len(levels), levels[0], levels[-1])
            if shape in self._by_shape:
                raise ValueError(f"routes {self._by_shape[shape].pattern!r} and {route.pattern!r} share a shape")
            self._by_shape[shape] = route

    def match(self, topic: str) -> tuple[Route, list[str]] | None:
        levels = topic.split("/")
        for last in (levels[-1], "+"):
            route = self._by_shape.get((len(levels), levels[0], last))
            if route is None:
                continue
            params = []
            for want, got in zip(route.levels, levels, strict=True):
                if want == "+":
                    params.append(got)
                elif want != got:
                    break
            else:
                return route, params
        return None
