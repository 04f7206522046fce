"""Builds the aiohttp application: one explicit endpoint table, one error middleware, its OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from handlers.context import Context
from http_api import (
    accessories,
    accounts,
    admin,
    console,
    gateway,
    gateway_lite,
    iotlock,
    openapi,
    system,
    tenancy,
    two_factor,
    user_flows,
    users,
)
from http_api.errors import error_middleware, quiet_unparseable_requests
from http_api.hardware import hardware_middleware
from http_api.state import CTX, DOOR, HEALTH, Door

MAX_BODY = 1024 * 1024

# Every REST route is an Endpoint: served and documented from the same value.
ENDPOINTS = [
    *system.ENDPOINTS,
    *accounts.ENDPOINTS,
    *user_flows.ENDPOINTS,  # before users': /users/register/ and the like are not /users/{id}/
    *tenancy.ENDPOINTS,
    *users.ENDPOINTS,
    *two_factor.ENDPOINTS,
    *gateway.ENDPOINTS,
    *accessories.ENDPOINTS,
    *gateway_lite.ENDPOINTS,
    *iotlock.ENDPOINTS,
    *admin.ENDPOINTS,
    *console.ENDPOINTS,
]


def build_app(
    ctx: Context, health: Callable[[], Awaitable[dict[str, Any]]], door: Door | None = None
) -> web.Application:
    quiet_unparseable_requests()
    app = web.Application(middlewares=[error_middleware, hardware_middleware], client_max_size=MAX_BODY)
    app[CTX] = ctx
    app[HEALTH] = health
    app[DOOR] = door or Door()
    app.add_routes([route for ep in ENDPOINTS for route in ep.routes()])
    app.add_routes(openapi.routes(ENDPOINTS))
    app.add_routes(console.routes())
    console.setup(app)
    return app
