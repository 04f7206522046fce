"""GET /openapi.json and GET /docs on the real server: a valid OpenAPI 3.1 document that names every
route the app serves (and no other), Swagger UI from installed files, and Schemathesis against it."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31

from handlers.context import Context
from http_api.app import build_app
from tests.support import Api, Server

# Routes that describe the API rather than belong to it.
NOT_API = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/static/{name}")}


async def fetch_document(http: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    async with http.get(f"{server.url}/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        return await resp.json()


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def served() -> set[tuple[str, str]]:
    """(method, path) of every route the server's app has, in OpenAPI path syntax."""
    app = build_app(Context(jwt_secret="x", writer=None), health=None)  # type: ignore[arg-type]
    routes = set()
    for resource in app.router.resources():
        for route in resource:
            if route.method != "HEAD":  # aiohttp answers HEAD beside every GET
                routes.add((route.method, resource.canonical))
    return routes - NOT_API


async def test_document_is_valid_openapi_31(server: Server, http: aiohttp.ClientSession) -> None:
    doc = await fetch_document(http, server)
    assert doc["openapi"].startswith("3.1.")
    validator = jsonschema_rs.Draft202012Validator(OPENAPI_31)
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors[:10]
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    assert set(doc["components"]["securitySchemes"]) == {"user", "device"}


async def test_every_route_is_documented_and_nothing_else(server: Server, http: aiohttp.ClientSession) -> None:
    doc = await fetch_document(http, server)
    routes = served()
    assert routes, "no routes found in the app"
    assert routes - documented(doc) == set(), "served but not in /openapi.json"
    assert documented(doc) - routes == set(), "in /openapi.json but not served"


async def test_every_operation_documents_its_contract(server: Server, http: aiohttp.ClientSession) -> None:
    doc = await fetch_document(http, server)
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["operationId"], where
            statuses = {int(s) for s in op["responses"]}
            assert any(s < 300 for s in statuses), where
            for status, answer in op["responses"].items():
                if 400 <= int(status) < 500:
                    assert answer["content"]["application/json"]["schema"] == error_ref, where
            if op["security"]:
                assert 401 in statuses, where
            if "requestBody" in op:
                assert {400, 413, 415} <= statuses, where
            if "{" in path:
                assert 404 in statuses, where
    ingest = doc["paths"]["/gateway/device-data/ingest"]["post"]
    assert ingest["security"] == [{"device": []}]
    assert doc["paths"]["/gateway/devices"]["post"]["security"] == [{"user": []}]
    assert doc["paths"]["/auth/login"]["post"]["security"] == []


def example_path(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1) == "id" else "x", path)


async def test_the_server_answers_every_documented_operation(server: Server, http: aiohttp.ClientSession) -> None:
    """Unauthenticated and without a body: never an unknown route or method, always a documented status."""
    doc = await fetch_document(http, server)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            async with http.request(method.upper(), server.url + example_path(path)) as resp:
                body = await resp.read()
            where = f"{method.upper()} {path}: {resp.status} {body[:200]!r}"
            assert resp.headers.get("Status") != "UnknownEndpoint" and resp.status != 405, where
            assert str(resp.status) in op["responses"], where


async def test_docs_page_and_its_assets_load(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "/openapi.json" in page
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert all(a.startswith("/docs/static/") for a in assets), assets  # nothing from a CDN
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert any(a.endswith("swagger-ui.css") for a in assets)
    for asset in assets:
        async with http.get(server.url + asset) as resp:
            assert resp.status == 200, asset
            data = await resp.read()
            assert len(data) > 100, asset
            if asset.endswith(".js"):
                assert "javascript" in resp.content_type, (asset, resp.content_type)
                # Swagger UI 5 is the first major version that renders OpenAPI 3.1.
                assert re.search(rb'"5\.\d+\.\d+"', data), "not Swagger UI 5.x"
    async with http.get(f"{server.url}/docs/static/no-such-file.js") as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == "unknown_endpoint"


async def test_api_reports_use_the_documented_bodies(alice: Api) -> None:
    """A handler's answer goes through its response model: a created device reads back the same."""
    device = await alice.new_device("openapi-shape")
    status, again = await alice.call("GET", f"/gateway/devices/{device['id']}")
    assert status == 200 and again == device
    status, body = await alice.call("GET", "/gateway/devices/not-a-number")
    assert status == 404 and set(body) == {"detail", "code", "errors"}
