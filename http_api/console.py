"""/console: the web console's files, and GET /console/events, its live updates (server-sent events).

The console is static HTML, CSS and JavaScript from http_api/console/ (no build step, nothing from
the internet) that calls the REST API like any other client (docs/console.md). Its pages are not API
routes and not in /openapi.json; /console/events is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from handlers.accounts import Principal, authenticate_jwt
from handlers.errors import Unauthorized
from handlers.live import Hub, LiveEvent, LiveQuery, Watch
from http_api.endpoint import Endpoint
from http_api.state import bearer, ctx_of

log = logging.getLogger(__name__)
FILES = Path(__file__).with_name("console")
ASSETS = ("console.js", "console.css", "favicon.svg")
POLL_SECONDS = 1.0  # how often a stream looks for changes
PING_SECONDS = 15.0  # a comment line this often keeps proxies from closing a quiet stream
# The page may load only our own files; the QR codes are data: images.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
STREAMS = web.AppKey("console_streams", set)  # of asyncio.Event: set at shutdown, the streams end
HUB = web.AppKey("console_hub", Hub)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


async def console_events(request: web.Request, who: Principal, query: LiveQuery) -> web.StreamResponse:
    ctx = ctx_of(request)
    token = bearer(request)
    watch = await Watch.start(who, query.device)  # 404 before the stream opens
    stop = asyncio.Event()
    request.app[STREAMS].add(stop)
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    try:
        await resp.prepare(request)
        quiet = 0.0
        while not stop.is_set():
            try:  # the token is checked every round: expired or deactivated, the stream ends
                who = await authenticate_jwt(ctx, token)
            except Unauthorized as exc:
                await resp.write(_event("end", {"code": exc.code}))
                break
            events = await watch.changes(who, request.app[HUB])
            for name, data in events:
                await resp.write(_event(name, data))
            quiet = 0.0 if events else quiet + POLL_SECONDS
            if quiet >= PING_SECONDS:
                await resp.write(b": ping\n\n")
                quiet = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    except ConnectionError:
        pass  # the page was closed
    except Exception:
        # The answer has begun: no error response can follow. Say so in the stream and end it.
        log.warning("console stream failed", exc_info=True)
        with contextlib.suppress(ConnectionError):
            await resp.write(_event("end", {"code": "internal"}))
    finally:
        request.app[STREAMS].discard(stop)
    return resp


async def _end_streams(app: web.Application) -> None:
    for stop in app[STREAMS]:
        stop.set()


def setup(app: web.Application) -> None:
    app[STREAMS] = set()
    app[HUB] = Hub(POLL_SECONDS)
    app.on_shutdown.append(_end_streams)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/console/events",
        console_events,
        "Live updates of the caller's devices, as server-sent events",
        {200: LiveEvent},
        errors=(404,),
        query=LiveQuery,
        media_type="text/event-stream",
        tag="console",
        description="First every device in the caller's scope (at most 500), then each change: `device` (state, "
        "last sample), `removed`; with `device`, that device only and its latest commands (`command`). Checked "
        "every second against the database, so every worker answers alike. Ends with `end` when the access token "
        "expires or the user is deactivated: reconnect with a fresh token. 404 `device_not_found` for a device "
        "outside the caller's scope. The console reads it with fetch() (an Authorization header).",
    ),
]


def routes() -> list[web.RouteDef]:
    """The console's page and its files: /console/ answers index.html for every page (the page
    picks what to show from the URL's #fragment)."""
    index = (FILES / "index.html").read_bytes()
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=index, content_type="text/html", charset="utf-8", headers=headers)

    async def to_page(request: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.FileResponse(FILES / name, headers=headers)

    return [web.get("/console", to_page), web.get("/console/", page), web.get("/console/static/{name}", asset)]
