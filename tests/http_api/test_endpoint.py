"""The Endpoint adapter: what it serves is what the document says, or it is a 500 (a bug), never drift."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, Field

from handlers.views import View
from http_api.endpoint import Endpoint, Reply
from http_api.errors import error_middleware
from http_api.openapi import document


class Thing(View):
    name: str


class NewThing(BaseModel):
    name: str = Field(min_length=1)


class Options(BaseModel):
    verbose: bool = False


async def make(request: web.Request, body: NewThing) -> dict[str, Any]:
    return {"name": body.name}


async def extra_key(request: web.Request) -> dict[str, Any]:
    return {"name": "x", "secret": "leaks"}


async def undocumented_status(request: web.Request) -> Reply:
    return Reply({"name": "x"}, 299)


async def pending(request: web.Request) -> Reply:
    return Reply({"name": "later"}, 202)


async def mine(request: web.Request, who: Any) -> dict[str, Any]:
    return {"name": who.username}


async def configure(request: web.Request, body: Options) -> None:
    return None


ENDPOINTS = [
    Endpoint("POST", "/things", make, "Make a thing", {201: Thing}, auth=None, body=NewThing),
    Endpoint("GET", "/extra", extra_key, "An extra key", {200: Thing}, auth=None),
    Endpoint("GET", "/status", undocumented_status, "An undocumented status", {200: Thing}, auth=None),
    Endpoint("GET", "/pending", pending, "A second status", {200: Thing, 202: Thing}, auth=None),
    Endpoint("POST", "/mine/{id:[0-9]+}", mine, "Mine", {200: Thing}, body=NewThing),
    Endpoint("PUT", "/options", configure, "Options", {204: None}, auth=None, body=Options),
]


@pytest.fixture
async def client() -> Any:
    app = web.Application(middlewares=[error_middleware])
    app.add_routes([route for ep in ENDPOINTS for route in ep.routes()])
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_the_body_is_validated_and_the_answer_shaped(client: TestClient) -> None:
    resp = await client.post("/things", json={"name": "lamp"})
    assert resp.status == 201 and await resp.json() == {"name": "lamp"}
    resp = await client.post("/things", json={"name": ""})
    assert resp.status == 400 and (await resp.json())["code"] == "invalid_schema"
    resp = await client.get("/pending")
    assert resp.status == 202 and await resp.json() == {"name": "later"}
    resp = await client.put("/options")
    assert resp.status == 204


async def test_credentials_are_checked_before_the_body(client: TestClient) -> None:
    resp = await client.post("/mine/1", data=b"not json", headers={"Content-Type": "application/json"})
    assert resp.status == 401 and (await resp.json())["code"] == "missing_credentials"


@pytest.mark.parametrize("path", ["/extra", "/status"])
async def test_an_undocumented_key_or_status_is_a_bug(
    client: TestClient, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="http_api.errors"):
        resp = await client.get(path)
    assert resp.status == 500 and (await resp.json())["code"] == "internal"
    assert "unhandled error" in caplog.text


def test_the_document_follows_the_declarations() -> None:
    doc = document(ENDPOINTS)
    make_op = doc["paths"]["/things"]["post"]
    assert make_op["requestBody"]["required"] is True
    assert set(make_op["responses"]) == {"201", "400", "408", "413", "415"}
    assert make_op["security"] == []
    assert doc["paths"]["/options"]["put"]["requestBody"]["required"] is False  # {} is a valid Options
    assert set(doc["paths"]["/pending"]["get"]["responses"]) == {"200", "202"}
    mine_op = doc["paths"]["/mine/{id}"]["post"]
    assert mine_op["security"] == [{"user": []}]
    assert {"401", "404"} <= set(mine_op["responses"])
    assert mine_op["parameters"][0]["schema"]["type"] == "integer"
    assert doc["components"]["schemas"]["Thing"]["additionalProperties"] is False


def test_two_endpoints_may_not_share_an_operation_id() -> None:
    with pytest.raises(ValueError, match="make"):
        document([ENDPOINTS[0], Endpoint("GET", "/other", make, "Again", {200: Thing}, auth=None)])
