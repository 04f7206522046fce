"""/health and /metrics."""

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from http_api.state import HEALTH


async def health(request: web.Request) -> web.Response:
    state = await request.app[HEALTH]()
    ok = all(part.get("status") == "ok" for part in state.values() if isinstance(part, dict))
    return web.json_response({"status": "ok" if ok else "unavailable", **state}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


ROUTES = [web.get("/health", health), web.get("/metrics", metrics)]
