"""/health and /metrics."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict

from http_api.endpoint import Endpoint, Reply
from http_api.state import HEALTH


class Part(BaseModel):
    """A component's state; its figures (connections, telemetry writer counters) come beside `status`."""

    model_config = ConfigDict(extra="allow")  # the composition root adds figures; they must not break /health

    status: Literal["ok", "down"]


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "unavailable"]
    broker: Part
    database: Part


async def health(request: web.Request) -> Health | Reply:
    state = await request.app[HEALTH]()
    ok = all(part.get("status") == "ok" for part in state.values() if isinstance(part, dict))
    body = Health.model_validate({"status": "ok" if ok else "unavailable", **state})
    return body if ok else Reply(body, 503)


async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


ENDPOINTS = [
    Endpoint(
        "GET", "/health", health, "Broker and database state", {200: Health, 503: Health}, auth=None, tag="system"
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        {200: None},
        auth=None,
        media_type="text/plain",
        tag="system",
        description="Prometheus text exposition format: broker and telemetry counters (docs/broker.md).",
    ),
]
