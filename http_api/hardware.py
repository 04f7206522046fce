"""The Hardware API's common provisions (spec/hardware-accessory.md), for every /v1/ route.

JSON only: a request must accept `application/json` and, when it sends a body, say it is JSON
(415 otherwise); every answer is JSON (the error middleware makes errors so). `http.tls_only`
refuses the plain port. Unknown paths are the error middleware's 404 `Status: UnknownEndpoint`.
"""

from __future__ import annotations

from aiohttp import web

from handlers.errors import Forbidden, UnsupportedMediaType
from http_api.errors import Handler
from http_api.state import door

PREFIX = "/v1/"
BODY_METHODS = {"POST", "PUT", "PATCH"}


def accepts_json(header: str) -> bool:
    """Whether an Accept header lists application/json (with any parameters, q above 0)."""
    for item in header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() == "application/json":
            q = next((p.split("=", 1)[1] for p in params if p.lower().startswith("q=")), "1")
            try:
                if float(q) > 0:
                    return True
            except ValueError:
                continue
    return False


def _secure(request: web.Request) -> bool:
    hops = door(request).trusted_proxy_hops
    if hops:
        forwarded = [
            p.strip() for p in ",".join(request.headers.getall("X-Forwarded-Proto", [])).split(",") if p.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops].lower() == "https"
    return request.secure


@web.middleware
async def hardware_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(PREFIX) or request.match_info.http_exception is not None:
        return await handler(request)  # not the Hardware API, or no such route (404/405)
    if door(request).tls_only and not _secure(request):
        raise Forbidden("the Hardware API is served over HTTPS only", code="https_required")
    if not accepts_json(request.headers.get("Accept", "")):
        raise UnsupportedMediaType("send Accept: application/json", code="unsupported_media_type")
    if request.method in BODY_METHODS and request.content_type != "application/json":
        raise UnsupportedMediaType(
            "send Content-Type: application/json with a JSON body", code="unsupported_media_type"
        )
    return await handler(request)
