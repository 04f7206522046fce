"""Typed application state and the small request helpers every route shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from handlers.accessories import Caller, authenticate_caller
from handlers.accounts import Principal, authenticate_jwt
from handlers.context import Context
from handlers.envelope import parse_json
from handlers.errors import NotFound, Unauthorized, UnsupportedMediaType, invalid

CTX = web.AppKey("ctx", Context)
HEALTH = web.AppKey("health", Callable[[], Awaitable[dict[str, Any]]])


@dataclass(frozen=True, slots=True)
class Door:
    """How the HTTP door treats a connection (http.* settings; docs/security.md)."""

    header_timeout: float = 20.0
    body_timeout: float = 30.0
    trusted_proxy_hops: int = 0
    tls_only: bool = False  # the Hardware API (/v1/) refuses plain HTTP


DOOR = web.AppKey("door", Door)

M = TypeVar("M", bound=BaseModel)


def ctx_of(request: web.Request) -> Context:
    return request.app[CTX]


def door(request: web.Request) -> Door:
    return request.app.get(DOOR) or Door()


async def raw_json_body(request: web.Request) -> bytes:
    """The body, refusing anything that says it is not JSON (415)."""
    ctype = request.content_type
    if (
        request.body_exists
        and ctype
        and ctype != "application/octet-stream"
        and not (ctype == "application/json" or ctype.endswith("+json"))
    ):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {ctype}")
    try:
        async with asyncio.timeout(door(request).body_timeout):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason="request body not received in time") from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    raw = await raw_json_body(request)
    data = parse_json(raw, "request body") if raw.strip() else {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from exc


def parse_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise invalid(exc) from exc


def bearer(request: web.Request) -> str:
    """The token from `Authorization: Bearer <t>`, or the Hardware API's bare `Authorization: <t>`."""
    header = request.headers.get("Authorization", "").strip()
    scheme, _, rest = header.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip()
    return header if " " not in header else ""


async def principal(request: web.Request) -> Principal:
    token = bearer(request)
    if not token:
        raise Unauthorized("missing credentials: send Authorization: Bearer <access token>", code="missing_credentials")
    return await authenticate_jwt(ctx_of(request), token)


async def hardware_caller(request: web.Request) -> Caller:
    """The Hardware API's caller: a user's access token or an accessory's."""
    return await authenticate_caller(ctx_of(request), bearer(request))


MAX_ID = 2**31 - 1  # ids are 32-bit integer columns; a larger number names nothing


def path_id(request: web.Request, name: str = "id", what: str = "device") -> int:
    """A numeric id from the path; anything else (letters, signs, overflow) is a 404 like a missing id."""
    raw = request.match_info[name]
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_ID:
        raise NotFound(f"{what} {raw} not found", code=f"{what}_not_found")
    return int(raw)


def client_address(request: web.Request) -> str:
    """The client's address: the socket's peer, or behind `trusted_proxy_hops` proxies the entry the
    outermost of them appended to X-Forwarded-For (entries left of it are the client's to invent)."""
    hops = door(request).trusted_proxy_hops
    if hops:
        forwarded = [a.strip() for a in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if a.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.remote or ""
