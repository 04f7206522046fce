"""GET /openapi.json and GET /docs on the real server: a valid OpenAPI 3.1 document that names every
route the app serves (and no other), Swagger UI from installed files, and Schemathesis against it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31

from handlers.context import Context
from http_api.app import build_app
from tests.mqtt import Client
from tests.support import PASSWORD, Api, Server, gatehouse

# Routes that describe the API rather than belong to it.
NOT_API = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/static/{name}")}
# The web console's page and files (http_api/console.py): a client of the API, not part of it.
CONSOLE = {("GET", "/console"), ("GET", "/console/"), ("GET", "/console/static/{name}")}


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
    return routes - NOT_API - CONSOLE


async def test_document_is_valid_openapi_31(server: Server, http: aiohttp.ClientSession) -> None:
    doc = await fetch_document(http, server)
    assert doc["openapi"].startswith("3.1.")
    validator = jsonschema_rs.Draft202012Validator(OPENAPI_31)
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors[:10]
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    assert set(doc["components"]["securitySchemes"]) == {"user", "device", "hardware"}


async def test_every_route_is_documented_and_nothing_else(server: Server, http: aiohttp.ClientSession) -> None:
    doc = await fetch_document(http, server)
    routes = served()
    assert routes, "no routes found in the app"
    # Each documented path is also served with its trailing slash toggled (an alias, not documented).
    aliases = {(method, toggle_slash(path)) for method, path in documented(doc)}
    assert routes - documented(doc) - aliases == set(), "served but not in /openapi.json"
    assert documented(doc) - routes == set(), "in /openapi.json but not served"
    assert aliases - routes == set(), "documented, but not served with the trailing slash toggled"


def toggle_slash(path: str) -> str:
    return path[:-1] if path.endswith("/") else path + "/"


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


# --- Schemathesis against the live server -------------------------------------------------------

# GATEHOUSE_FUZZ_EXAMPLES, _CHECKS (e.g. "all") and _SEED dig deeper by hand; CI runs the defaults.
CHECKS = os.environ.get("GATEHOUSE_FUZZ_CHECKS") or (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)
MAX_EXAMPLES = int(os.environ.get("GATEHOUSE_FUZZ_EXAMPLES") or 30)
FUZZ_USER = "fuzz@example.com"

# Tokens come from the environment (schemathesis reads ${VAR} in its config), never from the file.
USER_AUTH = """
headers = { Accept = "application/json" }

[auth.openapi.user]
bearer = "${GATEHOUSE_FUZZ_JWT}"

[auth.openapi.hardware]
bearer = "${GATEHOUSE_FUZZ_JWT}"
"""
DEVICE_AUTH = """
[auth.openapi.device]
bearer = "${GATEHOUSE_FUZZ_API_KEY}"

[dictionaries]
answering = { values = [%d] }

# Half the commands go to a connected device that answers at once (200 and 202 bodies), the rest
# to generated ids (404): a device that never answers would hold each request for its timeout.
[[operations]]
include-operation-id = "send_command"
parameters = { "path.id" = { dictionary = "answering", probability = 0.5 } }
"""


def schemathesis(server: Server, tmp: Path, name: str, config: str, env: dict[str, str], *selection: str) -> Any:
    """One `schemathesis run` on the live server, which must find nothing; its JSON report."""
    config_file = tmp / f"{name}.toml"
    config_file.write_text(config)
    report = tmp / f"{name}.json"
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(config_file),
        "run", f"{server.url}/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--workers", "1",  # 2 threads hit CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905)
        "--seed", os.environ.get("GATEHOUSE_FUZZ_SEED", "20261202"),
        "--request-timeout", "10",
        "--generation-database", "none",
        "--no-color",
        "--report", "json", "--report-json-path", str(report),
        *selection,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **env}, cwd=tmp)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(report.read_text())
    failed = result["test_cases"]["with_failures"] or result["errors"] or result["failures"]
    assert done.returncode == 0 and not failed, done.stdout[-8000:]
    return result


async def fuzz_user(server: Server, http: aiohttp.ClientSession) -> Api:
    """A user of its own, so the fuzzer deletes and floods only its own devices."""
    made = await asyncio.to_thread(
        gatehouse, "users", "create", "--username", FUZZ_USER, "--account-type", "customer", "--password-stdin",
        data_dir=server.data_dir, env=server.env, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    api = Api(http, server.url)
    await api.login(FUZZ_USER)
    return api


async def answering_device(api: Api, server: Server, clients: Callable[..., Client]) -> tuple[dict[str, Any], str]:
    """A claimed device connected over MQTT that answers every command with {"status": "ok"}."""
    device, api_key = await api.claimed_device("fuzz-answers")
    username = device["username"]
    client = clients()

    def answer(paho_client: Any, userdata: Any, msg: Any) -> None:
        req_id = msg.topic.rsplit("/", 1)[1]
        paho_client.publish(f"devices/{username}/commands/res/{req_id}", b'{"status":"ok"}', qos=1)

    assert await client.connect(server.mqtt_port, username, api_key) == 0
    client.paho.on_message = answer  # after connect, which makes the paho client for this username
    assert await client.subscribe(f"devices/{username}/commands/req/+") == 1
    return device, api_key


async def test_schemathesis_finds_nothing(
    server: Server, http: aiohttp.ClientSession, clients: Callable[..., Client], tmp_path: Path
) -> None:
    """Every operation fuzzed, authenticated: no 500, every status, header and body as documented.

    Logout is fuzzed with the same access token as the rest: it revokes only the refresh token it is
    given (the fuzzer holds no real one), and an access token stays valid until it expires.
    """
    api = await fuzz_user(server, http)
    doc = await fetch_document(http, server)
    env = {"GATEHOUSE_FUZZ_JWT": api.token or ""}
    # Commands and ingest need a device of the fuzzer's; it is made after the first run, whose
    # DELETEs and stateful scenarios could otherwise remove it midway.
    own = ("--exclude-operation-id=send_command", "--exclude-operation-id=ingest")
    # The console's event stream never ends by itself (tests/integration/test_console_api.py tests it).
    endless = ("--exclude-operation-id=console_events",)
    first = await asyncio.to_thread(schemathesis, server, tmp_path, "user", USER_AUTH, env, *own, *endless)
    device, api_key = await answering_device(api, server, clients)
    env["GATEHOUSE_FUZZ_API_KEY"] = api_key
    config = USER_AUTH + DEVICE_AUTH % device["id"]
    second = await asyncio.to_thread(
        schemathesis, server, tmp_path, "device", config, env, *(o.replace("exclude", "include") for o in own)
    )
    runs = [first, second]
    cases = sum(r["test_cases"]["generated"] for r in runs)
    tested = sum(r["operations"]["tested"] for r in runs)
    print(f"schemathesis: {cases} cases, {tested} routes")
    assert tested == len(documented(doc)) - len(endless), runs
    assert cases >= tested * 10, f"only {cases} cases"
    status, commands = await api.call("GET", f"/gateway/devices/{device['id']}/commands?limit=1000")
    answered = [c for c in commands["results"] if c["status"] == "ok"]
    assert status == 200 and answered, "no fuzzed command reached the answering device"
