"""One middleware maps every error to the JSON body and the status the spec names."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from handlers.errors import ErrorBody, GatehouseError, RateLimited

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "unknown_endpoint",
    405: "method_not_allowed",
    409: "conflict",
    408: "request_timeout",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_response(
    status: int,
    detail: str,
    code: str,
    errors: list[object] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> web.Response:
    fields = {"detail": detail, "code": code, "errors": errors or [], **(extra or {})}
    body = ErrorBody.model_validate(fields).model_dump(exclude_unset=True)  # optional keys only when given
    return web.json_response(body, status=status, headers=headers, dumps=lambda o: json.dumps(o, default=str))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatehouseError as exc:
        headers = {"Status": exc.status_header} if exc.status_header else None
        if exc.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        if isinstance(exc, RateLimited):
            headers = {**(headers or {}), "Retry-After": str(exc.retry_after)}
        return error_response(exc.status, exc.detail, exc.code, exc.errors, headers, exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Status": "UnknownEndpoint"} if exc.status == 404 else {}
        if "Allow" in exc.headers:  # 405 must say which methods the resource has
            headers["Allow"] = exc.headers["Allow"]
        detail = exc.reason if exc.status != 404 else f"no endpoint {request.method} {request.path}"
        response = error_response(exc.status, detail, _HTTP_CODES.get(exc.status, "error"), headers=headers)
        if exc.status == 408:  # the rest of a slow body is not worth waiting for
            response.force_close()
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal server error", "internal")


class UnparseableRequestLog(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a broken request line) as an error
    with a traceback, though it is the client's fault and answered 400: make it one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = str(exc.message).strip().splitlines()[0][:200] if exc.message else type(exc).__name__
            record.msg, record.args = "unparseable HTTP request from %s: %s", (*record.args, reason)  # type: ignore[misc]
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_unparseable_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, UnparseableRequestLog) for f in server_log.filters):
        server_log.addFilter(UnparseableRequestLog())
