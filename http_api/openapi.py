"""GET /openapi.json, built from the endpoint table and its pydantic models, and GET /docs (Swagger UI)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from handlers.errors import ErrorBody
from http_api.endpoint import PATH_PARAM, Endpoint
from http_api.state import MAX_ID

REF = "#/components/schemas/{model}"
DOCS_PREFIX = "/docs/static"

ERRORS = {
    400: "invalid JSON (`invalid_json`) or a body or query that breaks the schema (`invalid_schema`, with `Status: "
    "InvalidSchema`), or a rule the schema cannot say",
    401: "missing, invalid or expired credentials",
    403: "forbidden: the caller sees it but may not do this (`permission_denied`, `read_only_field`)",
    404: "not found: the route (`unknown_endpoint`, with `Status: UnknownEndpoint`) or what it names "
    "(another tenant's device reads as missing)",
    409: "conflict",
    410: "gone",
    408: "the body did not arrive within http.body_timeout_seconds (`request_timeout`)",
    413: "body over 1 MiB",
    415: "Content-Type is not application/json (under /v1/: also an Accept without application/json)",
    429: "too many requests (`rate_limited`) or attempts for this account (`account_locked`); see Retry-After",
}
HEADERS: dict[int, dict[str, Any]] = {
    400: {"Status": {"description": "`InvalidSchema` on schema errors", "schema": {"type": "string"}}},
    409: {
        "Status": {"description": "`DuplicateMacAddress`: the accessory is registered", "schema": {"type": "string"}}
    },
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    404: {"Status": {"description": "`UnknownEndpoint` when no route matches", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "required": True, "schema": {"type": "integer"}}},
}
SECURITY_SCHEMES = {
    "user": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Access token from POST /auth/login. The bare `Authorization: <token>` form is accepted too.",
    },
    "hardware": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The Hardware API (/v1/): a user's access token (POST /auth/login) or an accessory's "
        "(POST /v1/accessory/{mac_address}/login); `Authorization: <JWT>` as the spec writes it, or Bearer.",
    },
    "device": {
        "type": "http",
        "scheme": "bearer",
        "description": "The device's API key, from POST /gateway/devices/claim (the MQTT password too).",
    },
}


def _version() -> str:
    try:
        return importlib.metadata.version("gatehouse")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _models(endpoints: list[Endpoint]) -> list[tuple[type[BaseModel], Any]]:
    found: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for ep in endpoints:
        for model in (ep.body, ep.query):
            if model is not None:
                found[(model, "validation")] = None
        for model in ep.responses.values():
            if model is not None:
                found[(model, "serialization")] = None
    return list(found)


def _path_parameters(ep: Endpoint) -> list[dict[str, Any]]:
    params = []
    for name, pattern in PATH_PARAM.findall(ep.path):
        if pattern == "[0-9]+":
            schema: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
        else:
            schema = {"type": "string", "pattern": "^[^/]+$"}
        param = {"name": name, "in": "path", "required": True, "schema": schema}
        if name in ep.path_params:
            param["description"] = ep.path_params[name]
        params.append(param)
    return params


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        # A query string cannot say null: an optional field is simply left out.
        branches = [b for b in prop.get("anyOf", []) if b != {"type": "null"}]
        if len(branches) == 1:
            prop = {**{k: v for k, v in prop.items() if k not in ("anyOf", "default")}, **branches[0]}
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(ep: Endpoint, refs: dict[tuple[type[BaseModel], Any], dict[str, Any]], defs: dict[str, Any]) -> dict:
    op: dict[str, Any] = {
        "operationId": ep.handler.__name__,
        "summary": ep.summary,
        "tags": [ep.tag] if ep.tag else [],
        "security": [{ep.auth: []}] if ep.auth else [],
    }
    if ep.description:
        op["description"] = ep.description
    params = _path_parameters(ep)
    if ep.query is not None:
        query_ref = refs[(ep.query, "validation")]["$ref"].rsplit("/", 1)[-1]
        params += _query_parameters(defs[query_ref])
    if params:
        op["parameters"] = params
    if ep.body is not None:
        ref = refs[(ep.body, "validation")]
        # An empty body reads as {}: it is optional when the model has no required field.
        required = bool(defs[ref["$ref"].rsplit("/", 1)[-1]].get("required"))
        op["requestBody"] = {"required": required, "content": _content("application/json", ref)}
    elif ep.raw_body is not None:
        schema = TypeAdapter(ep.raw_body).json_schema(ref_template=REF)
        op["requestBody"] = {"required": True, "content": _content(ep.raw_body_media_type, schema)}
    responses: dict[str, Any] = {}
    for status, model in ep.responses.items():
        answer: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if model is not None:
            answer["content"] = _content(ep.media_type, refs[(model, "serialization")])
        elif ep.media_type != "application/json":
            answer["content"] = _content(ep.media_type, {"type": "string"})
        responses[str(status)] = answer
    error = _content("application/json", refs[(ErrorBody, "serialization")])
    for status in ep.error_statuses:
        answer = {"description": ERRORS[status], "content": error}
        if status in HEADERS:
            answer["headers"] = HEADERS[status]
        responses[str(status)] = answer
    op["responses"] = responses
    return op


def document(endpoints: list[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `endpoints`, every schema from the models the adapter uses."""
    refs, top = models_json_schema(_models(endpoints), ref_template=REF)
    defs = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for ep in endpoints:
        op = _operation(ep, refs, defs)
        if op["operationId"] in seen:
            raise ValueError(f"two endpoints share the handler name {op['operationId']}")
        seen.add(op["operationId"])
        paths.setdefault(ep.openapi_path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gatehouse",
            "version": _version(),
            "description": "REST door of Gatehouse. MQTT topics are in docs/api.md. Every error is "
            '`{"detail", "code", "errors"}`.',
        },
        "paths": paths,
        "components": {"schemas": defs, "securitySchemes": SECURITY_SCHEMES},
    }


def _swagger_static() -> Path:
    spec = importlib.util.find_spec("swagger_ui")  # its location only: importing it pulls in its framework glue
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")
DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Gatehouse API</title>
<link rel="stylesheet" href="{DOCS_PREFIX}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_PREFIX}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_PREFIX}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"}});
</script>
</body>
</html>
"""


def routes(endpoints: list[Endpoint]) -> list[web.AbstractRouteDef]:
    """/openapi.json, /docs and its assets: these describe the API and are not part of it."""
    body = json.dumps(document(endpoints)).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=DOCS_PAGE, content_type="text/html")

    static = _swagger_static()

    async def asset(request: web.Request) -> web.StreamResponse:
        # Only the files the page names: aiohttp's static route answers a missing file with a bare
        # 404 of its own, past the error middleware.
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.FileResponse(static / name, headers={"Cache-Control": "public, max-age=86400"})

    return [
        web.get("/openapi.json", openapi_json),
        web.get("/docs", docs),
        web.get(DOCS_PREFIX + "/{name}", asset),
    ]
