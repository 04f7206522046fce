"""A REST route and its contract in one value: the adapter serves it and the document describes it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from handlers.devices import authenticate_api_key
from http_api.state import bearer, hardware_caller, parse_body, parse_query, principal

Auth = Literal["user", "device", "hardware"]  # hardware: a user's or an accessory's token (/v1/)
PATH_PARAM = re.compile(r"\{(\w+)(?::([^{}]+))?\}")


@dataclass(frozen=True, slots=True)
class Reply:
    """A body with a status other than the route's first documented one (e.g. 202, 503)."""

    body: Any
    status: int


@dataclass(frozen=True)
class Endpoint:
    """One route. The adapter authenticates, validates `body`/`query` with the declared models and
    passes them on; the answer is shaped by the model documented for its status, so what is served
    and what /openapi.json says cannot part ways.

    The handler is called as `handler(request, who=..., device=..., body=..., query=...)`, with only
    the keywords this endpoint declares (`who` for user and hardware auth, `device` for device auth). It returns
    the body for `responses`' first status, a `Reply`, or a ready `web.Response` (non-JSON bodies).
    """

    method: str
    path: str  # aiohttp syntax: /gateway/devices/{id:[0-9]+}
    handler: Callable[..., Awaitable[Any]]
    summary: str
    responses: dict[int, type[BaseModel] | None]  # success statuses -> body model (None: no body)
    errors: tuple[int, ...] = ()  # statuses beyond the ones `error_statuses` adds
    auth: Auth | None = "user"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    raw_body: Any = None  # a type documenting a body the handler reads itself
    raw_body_media_type: str = "application/json"  # ... and the media type it comes in
    media_type: str = "application/json"
    tag: str = ""
    description: str = ""
    path_params: dict[str, str] = field(default_factory=dict)  # name -> description

    @property
    def error_statuses(self) -> list[int]:
        """`errors` plus what the adapter itself may answer: 401 (auth), 400/408/413/415 (a body), 400 (a query),
        404 (a path parameter that names nothing)."""
        statuses = set(self.errors)
        if PATH_PARAM.search(self.path):
            statuses.add(404)
        if self.auth:
            statuses.add(401)
        if self.body or self.raw_body:
            statuses |= {400, 408, 413, 415}
        if self.query:
            statuses.add(400)
        return sorted(statuses)

    def routes(self) -> list[web.RouteDef]:
        """The route as documented, and the same path with the trailing slash toggled (spec paths such
        as `/users/` and `/users/{id}/` are called both ways); /openapi.json lists the documented one."""
        other = self.path[:-1] if self.path.endswith("/") else self.path + "/"
        paths = [self.path] if self.path == "/" else [self.path, other]
        return [web.route(self.method, path, self._serve) for path in paths]

    @property
    def openapi_path(self) -> str:
        return PATH_PARAM.sub(r"{\1}", self.path)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {}
        if self.auth == "user":
            kwargs["who"] = await principal(request)
        elif self.auth == "hardware":
            kwargs["who"] = await hardware_caller(request)
        elif self.auth == "device":
            kwargs["device"] = await authenticate_api_key(bearer(request))
        if self.body is not None:
            kwargs["body"] = await parse_body(request, self.body)
        if self.query is not None:
            kwargs["query"] = parse_query(request, self.query)
        result = await self.handler(request, **kwargs)
        if isinstance(result, web.StreamResponse):
            return result
        reply = result if isinstance(result, Reply) else Reply(result, next(iter(self.responses)))
        if reply.status not in self.responses:
            raise RuntimeError(f"{self.method} {self.path} answered undocumented status {reply.status}")
        model = self.responses[reply.status]
        if model is None:
            return web.Response(status=reply.status)
        return web.json_response(model.model_validate(reply.body).model_dump(mode="json"), status=reply.status)
