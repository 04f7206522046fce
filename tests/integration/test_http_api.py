"""The REST door against a real server: auth, bad input, provisioning, ingest, device registry."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import pytest

from tests.support import PASSWORD, Api, Server, fetch, table_names

INGEST = "/gateway/device-data/ingest"


def assert_error(status: int, body: Any, want_status: int, code: str) -> dict[str, Any]:
    """Every error is JSON {"detail", "code", "errors"} with the expected status and code."""
    assert status == want_status, body
    assert isinstance(body, dict), body
    assert set(body) == {"detail", "code", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], list)
    assert body["code"] == code, body
    return body


def unique(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- authentication ---------------------------------------------------------------------------


async def test_login(server: Server, http: aiohttp.ClientSession) -> None:
    api = Api(http, server.url)
    body = await api.login("alice@example.com")
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60  # GATEHOUSE_AUTH__ACCESS_TOKEN_MINUTES=30 in tests.support
    assert body["access_token"] and body["refresh_token"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "gatehouse" and claims["typ"] == "access"


async def test_login_failures_look_alike(server: Server, http: aiohttp.ClientSession) -> None:
    api = Api(http, server.url)
    status, wrong_pw = await api.call("POST", "/auth/login", {"username": "alice@example.com", "password": "Nope1234"})
    assert_error(status, wrong_pw, 401, "invalid_credentials")
    assert api.last_headers["WWW-Authenticate"] == "Bearer"
    status, unknown = await api.call("POST", "/auth/login", {"username": "mallory@example.com", "password": PASSWORD})
    assert_error(status, unknown, 401, "invalid_credentials")
    assert wrong_pw == unknown  # same body: nothing tells an unknown user from a wrong password
    status, body = await api.call("POST", "/auth/login", {"username": "alice@example.com"})
    assert_error(status, body, 400, "invalid_schema")


async def test_me_bearer_and_bare_forms(alice: Api) -> None:
    status, me = await alice.call("GET", "/me")
    assert status == 200
    assert me["username"] == "alice@example.com"
    assert me["account_type"] == "customer"
    assert "password_hash" not in me
    for header in (f"Bearer {alice.token}", f"bearer {alice.token}", str(alice.token)):
        status, again = await alice.call("GET", "/me", headers={"Authorization": header})
        assert (status, again) == (200, me), header


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_credentials"),
        ("", "missing_credentials"),
        ("Bearer", "missing_credentials"),
        ("Bearer ", "missing_credentials"),
        ("Basic YWxpY2U6cHc=", "missing_credentials"),
        ("Bearer not-a-jwt", "token_invalid"),
        ("garbage", "token_invalid"),
        ("Bearer a.b.c", "token_invalid"),
    ],
)
async def test_me_without_valid_token(
    server: Server, http: aiohttp.ClientSession, header: str | None, code: str
) -> None:
    api = Api(http, server.url)
    status, body = await api.call("GET", "/me", headers={"Authorization": header} if header is not None else None)
    assert_error(status, body, 401, code)
    assert api.last_headers["WWW-Authenticate"] == "Bearer"


def _server_token(server: Server, **claims: Any) -> str:
    secret = (server.data_dir / "jwt.secret").read_text().strip()
    now = datetime.now(UTC)
    payload = {"aud": "gatehouse", "typ": "access", "iat": now, "exp": now + timedelta(minutes=5), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


async def test_crafted_tokens(server: Server, alice: Api) -> None:
    _, me = await alice.call("GET", "/me")
    # Sanity: a token we sign with the server's secret is accepted ...
    status, _ = await alice.call(
        "GET", "/me", headers={"Authorization": f"Bearer {_server_token(server, sub=me['id'])}"}
    )
    assert status == 200
    past = datetime.now(UTC) - timedelta(seconds=30)
    cases = [
        (_server_token(server, sub=me["id"], exp=past), "token_expired"),
        (_server_token(server, sub=me["id"], typ="refresh"), "token_invalid"),
        (_server_token(server, sub=me["id"], aud="other"), "token_invalid"),
        (_server_token(server, sub=str(uuid.uuid4())), "account_not_active"),
        (_server_token(server, sub="not-a-uuid"), "account_not_active"),
        (jwt.encode({"sub": me["id"], "aud": "gatehouse", "typ": "access"}, "wrong" * 10, algorithm="HS256"), None),
    ]
    for token, code in cases:
        status, body = await alice.call("GET", "/me", headers={"Authorization": f"Bearer {token}"})
        assert_error(status, body, 401, code or "token_invalid")


async def test_refresh_rotates(server: Server, http: aiohttp.ClientSession) -> None:
    api = Api(http, server.url)
    first = await api.login("bob@example.com")
    status, second = await api.call("POST", "/auth/refresh", {"refresh_token": first["refresh_token"]}, auth=False)
    assert status == 200, second
    assert second["refresh_token"] != first["refresh_token"]
    status, me = await api.call("GET", "/me", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert (status, me["username"]) == (200, "bob@example.com")
    status, body = await api.call("POST", "/auth/refresh", {"refresh_token": first["refresh_token"]}, auth=False)
    assert_error(status, body, 401, "refresh_invalid")
    status, body = await api.call("POST", "/auth/refresh", {"refresh_token": "made-up"}, auth=False)
    assert_error(status, body, 401, "refresh_invalid")
    status, body = await api.call("POST", "/auth/refresh", {}, auth=False)
    assert_error(status, body, 400, "invalid_schema")


async def test_concurrent_refresh_one_wins(server: Server, http: aiohttp.ClientSession) -> None:
    api = Api(http, server.url)
    tokens = await api.login("bob@example.com")
    req = {"refresh_token": tokens["refresh_token"]}
    results = await asyncio.gather(*(api.call("POST", "/auth/refresh", req, auth=False) for _ in range(2)))
    assert sorted(status for status, _ in results) == [200, 401], results
    loser = next(body for status, body in results if status == 401)
    assert_error(401, loser, 401, "refresh_invalid")


async def test_logout_revokes_refresh_token(server: Server, http: aiohttp.ClientSession) -> None:
    api = Api(http, server.url)
    tokens = await api.login("bob@example.com")
    status, body = await api.call("POST", "/auth/logout", {"refresh_token": tokens["refresh_token"]}, auth=False)
    assert_error(status, body, 401, "missing_credentials")  # logging out needs the access token
    status, body = await api.call("POST", "/auth/logout", {"refresh_token": tokens["refresh_token"]})
    assert (status, body) == (204, None)
    status, body = await api.call("POST", "/auth/refresh", {"refresh_token": tokens["refresh_token"]}, auth=False)
    assert_error(status, body, 401, "refresh_invalid")


# --- bad input --------------------------------------------------------------------------------


async def test_invalid_json(alice: Api) -> None:
    for raw in (
        "{bad",
        '{"name": "x"',
        "\xff",
        "nul",
        '{"name": "x", "location": NaN}',
        '{"name": "x", "n": -Infinity}',
        '{"name": "x", "n": 1e999}',
        "[" * 200_000,  # nesting deep enough to blow the parser's recursion limit
    ):
        status, body = await alice.call(
            "POST", "/gateway/devices", data=raw.encode("latin-1"), headers={"Content-Type": "application/json"}
        )
        assert_error(status, body, 400, "invalid_json")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"location": "x"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "m", "location": "x" * 201}, "location"),
        ({"name": "m", "kind": "toaster"}, "kind"),
        ({"name": "m", "username": "a/b"}, "username"),
        ({"name": "m", "username": "dev+1"}, "username"),
        ({"name": "m", "username": "dev#"}, "username"),
        ({"name": "m", "username": "-leading"}, "username"),
        ({"name": "m", "username": "x" * 129}, "username"),
        ({"name": "m", "username": "provision"}, "username"),
        ({"name": "m", "username": ""}, "username"),
        ({"name": 5}, "name"),
    ],
)
async def test_invalid_schema(alice: Api, payload: dict[str, Any], field: str) -> None:
    status, body = await alice.call("POST", "/gateway/devices", payload)
    assert_error(status, body, 400, "invalid_schema")
    assert alice.last_headers["Status"] == "InvalidSchema"
    assert [e["field"] for e in body["errors"]] == [field], body
    assert all(e["message"] for e in body["errors"])


async def test_invalid_schema_not_an_object(alice: Api) -> None:
    for payload in ([], ["name"], "name", 5, None):
        status, body = await alice.call(
            "POST", "/gateway/devices", data=json.dumps(payload), headers={"Content-Type": "application/json"}
        )
        assert_error(status, body, 400, "invalid_schema")
        assert alice.last_headers["Status"] == "InvalidSchema"


async def test_wrong_content_type(alice: Api) -> None:
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, body = await alice.call(
            "POST", "/gateway/devices", data=json.dumps({"name": "m"}), headers={"Content-Type": ctype}
        )
        assert_error(status, body, 415, "unsupported_media_type")
    # application/*+json is JSON.
    status, _ = await alice.call(
        "POST", "/gateway/devices", data=json.dumps({"name": "m"}), headers={"Content-Type": "application/vnd.x+json"}
    )
    assert status == 201


async def test_unknown_endpoint(alice: Api) -> None:
    for path in ("/nope", "/gateway", "/gateway/devices/1/nope", "/gateway/devices/claim/extra"):
        status, body = await alice.call("GET", path)
        assert_error(status, body, 404, "unknown_endpoint")
        assert alice.last_headers["Status"] == "UnknownEndpoint"
    status, body = await alice.call("GET", "/nope", auth=False)
    assert_error(status, body, 404, "unknown_endpoint")


async def test_wrong_method(alice: Api) -> None:
    for method, path in (
        ("PUT", "/gateway/devices"),
        ("GET", "/gateway/devices/claim"),
        ("DELETE", "/auth/login"),
        ("GET", INGEST),
        ("PATCH", "/gateway/devices/1/provision"),
    ):
        status, body = await alice.call(method, path)
        assert_error(status, body, 405, "method_not_allowed")
        assert alice.last_headers.get("Allow"), (method, path)


@pytest.mark.parametrize(
    ("raw_id", "code"),
    [
        ("abc", "unknown_endpoint"),
        ("1.5", "unknown_endpoint"),
        ("0x1", "unknown_endpoint"),
        ("-1", "unknown_endpoint"),
        ("%201", "unknown_endpoint"),
        ("0", "device_not_found"),
        ("2147483648", "device_not_found"),
        ("99999999999999999999999", "device_not_found"),
        ("999999", "device_not_found"),
    ],
)
async def test_bad_device_id(alice: Api, raw_id: str, code: str) -> None:
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/telemetry/latest"), ("GET", "/claims")):
        status, body = await alice.call(method, f"/gateway/devices/{raw_id}{suffix}")
        assert_error(status, body, 404, code)
    status, body = await alice.call("POST", f"/gateway/devices/{raw_id}/provision", {})
    assert_error(status, body, 404, code)


async def test_huge_body(alice: Api) -> None:
    big = json.dumps({"name": "m", "location": "x" * (1024 * 1024 + 10)})
    status, body = await alice.call("POST", "/gateway/devices", data=big, headers={"Content-Type": "application/json"})
    assert_error(status, body, 413, "payload_too_large")
    assert alice.last_headers["Content-Type"].startswith("application/json")
    device, key = await alice.claimed_device()
    status, body = await alice.call(
        "POST",
        INGEST,
        data=json.dumps({"blob": "x" * (2 * 1024 * 1024)}),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert_error(status, body, 413, "payload_too_large")
    _, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry")
    assert hist["results"] == []


# --- provisioning -----------------------------------------------------------------------------


async def test_claim_unknown_token(alice: Api) -> None:
    status, body = await alice.claim("no-such-token")
    assert_error(status, body, 404, "token_unknown")


async def test_claim_bad_body(alice: Api) -> None:
    status, body = await alice.call("POST", "/gateway/devices/claim", {"device_metadata": {}}, auth=False)
    assert_error(status, body, 400, "invalid_schema")
    assert [e["field"] for e in body["errors"]] == ["token"]
    status, body = await alice.call(
        "POST", "/gateway/devices/claim", {"token": "t", "device_metadata": [1]}, auth=False
    )
    assert_error(status, body, 400, "invalid_schema")
    assert [e["field"] for e in body["errors"]] == ["device_metadata"]


async def test_claim_used_token(alice: Api) -> None:
    device = await alice.new_device()
    token = await alice.provision(device["id"])
    status, _ = await alice.claim(token)
    assert status == 200
    status, body = await alice.claim(token)
    assert_error(status, body, 409, "token_used")


async def test_claim_expired_token(alice: Api) -> None:
    device = await alice.new_device()
    token = await alice.provision(device["id"], lifetime_minutes=0.001)  # 60 ms
    await asyncio.sleep(0.2)
    status, body = await alice.claim(token)
    assert_error(status, body, 410, "token_expired")
    _, dev = await alice.call("GET", f"/gateway/devices/{device['id']}")
    assert dev["has_api_key"] is False


async def test_provision_lifetime(alice: Api) -> None:
    device = await alice.new_device()
    before = datetime.now(UTC)
    status, issued = await alice.call("POST", f"/gateway/devices/{device['id']}/provision", {"lifetime_minutes": 10})
    assert status == 201
    assert issued["device_id"] == device["id"]
    expires = datetime.fromisoformat(issued["expires_at"])
    target = before + timedelta(minutes=10)
    assert abs((expires - target).total_seconds()) < 5
    status, claim = await alice.claim(issued["token"])
    assert status == 200
    assert datetime.fromisoformat(claim["token_expires_at"]) == expires
    # No lifetime: the token does not expire.
    status, issued = await alice.call("POST", f"/gateway/devices/{device['id']}/provision", {})
    assert (status, issued["expires_at"]) == (201, None)
    for bad in (0, -1, "soon", 10**9):
        status, body = await alice.call("POST", f"/gateway/devices/{device['id']}/provision", {"lifetime_minutes": bad})
        assert_error(status, body, 400, "invalid_schema")
        assert [e["field"] for e in body["errors"]] == ["lifetime_minutes"]


async def test_racing_claims_exactly_one_wins(alice: Api) -> None:
    device = await alice.new_device()
    token = await alice.provision(device["id"])
    results = await asyncio.gather(*(alice.claim(token, {"n": i}) for i in range(10)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * 9, results
    for status, body in results:
        if status == 409:
            assert_error(status, body, 409, "token_used")
    winner = next(body for status, body in results if status == 200)
    _, claims = await alice.call("GET", f"/gateway/devices/{device['id']}/claims")
    assert len(claims["results"]) == 1
    status, _ = await alice.call("POST", INGEST, {"v": 1}, headers={"Authorization": f"Bearer {winner['api_key']}"})
    assert status == 200


async def test_new_claim_replaces_key(alice: Api) -> None:
    device, old_key = await alice.claimed_device()
    status, claim = await alice.claim(await alice.provision(device["id"]))
    assert status == 200
    new_key = claim["api_key"]
    assert new_key != old_key
    status, body = await alice.call("POST", INGEST, {"v": 1}, headers={"Authorization": f"Bearer {old_key}"})
    assert_error(status, body, 401, "invalid_api_key")
    status, body = await alice.call("POST", INGEST, {"v": 2}, headers={"Authorization": f"Bearer {new_key}"})
    assert (status, body) == (200, {"status": "ok"})
    _, latest = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry/latest")
    assert latest["payload"] == {"v": 2}


async def test_secrets_not_stored_in_clear(server: Server, alice: Api, http: aiohttp.ClientSession) -> None:
    device = await alice.new_device()
    token = await alice.provision(device["id"])
    status, claim = await alice.claim(token)
    assert status == 200
    api_key = claim["api_key"]
    unused = await alice.provision(device["id"])
    session = await Api(http, server.url).login("alice@example.com")
    secrets = {"api_key": api_key, "token": token, "unused token": unused, "refresh": session["refresh_token"]}
    tables = await table_names(server)
    assert {"devices", "provisioning_tokens", "refresh_tokens"} <= set(tables)
    checked = 0
    for table in tables:
        for row in await fetch(server, f'SELECT * FROM "{table}"'):
            for value in row:
                text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                for what, secret in secrets.items():
                    assert secret not in text, f"{what} stored in clear in {table}"
            checked += 1
    assert checked
    # What is stored is the digest.
    ((stored,),) = await fetch(server, "SELECT api_key_hash FROM devices WHERE id = ?", device["id"])
    assert re.fullmatch(r"[0-9a-f]{64}", stored)


async def test_claims_list_capped_at_50_newest(alice: Api) -> None:
    device = await alice.new_device()
    started = time.monotonic()
    for i in range(52):
        status, _ = await alice.claim(await alice.provision(device["id"]), {"n": i})
        assert status == 200
    assert time.monotonic() - started < 20
    status, claims = await alice.call("GET", f"/gateway/devices/{device['id']}/claims")
    assert status == 200
    assert claims["device_id"] == device["id"]
    assert [c["metadata"]["n"] for c in claims["results"]] == list(range(51, 1, -1))
    assert {c["source"] for c in claims["results"]} == {"http"}
    assert all(c["claimed_at"] and c["remote"] for c in claims["results"])


# --- ingest -----------------------------------------------------------------------------------


async def test_ingest_auth(alice: Api) -> None:
    await alice.claimed_device()
    status, body = await alice.call("POST", INGEST, {"v": 1}, auth=False)
    assert_error(status, body, 401, "missing_api_key")
    for header in ("Bearer wrong-key", "wrong-key", f"Bearer {alice.token}"):
        status, body = await alice.call("POST", INGEST, {"v": 1}, headers={"Authorization": header})
        assert_error(status, body, 401, "invalid_api_key")


async def test_ingest_bare_key(alice: Api) -> None:
    device, key = await alice.claimed_device()
    status, _ = await alice.call("POST", INGEST, {"v": 3}, headers={"Authorization": key})
    assert status == 200
    _, latest = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry/latest")
    assert latest["payload"] == {"v": 3}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'{"v": "a\\u0000b"}', "invalid_json"),  # PostgreSQL text/jsonb cannot hold NUL
        (b'{"\\ud800": 1}', "invalid_json"),  # nor an unpaired surrogate
        (b'{"v": "\xed\xa0\x80"}', "invalid_json"),  # one sent UTF-8-encoded
        (b"[1, 2]", "invalid_senml"),
        (b"[]", "invalid_senml"),
        (b'[{"n": "x", "v": "high"}]', "invalid_senml"),
        (b"42", "invalid_telemetry"),
        (b'"text"', "invalid_telemetry"),
        (b"null", "invalid_telemetry"),
        (b"true", "invalid_telemetry"),
        (b"{}", "invalid_telemetry"),
    ],
)
async def test_ingest_refuses_bad_payload(alice: Api, raw: bytes, code: str) -> None:
    device, key = await alice.claimed_device()
    hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    status, body = await alice.call("POST", INGEST, data=raw, headers=hdrs)
    assert_error(status, body, 400, code)
    _, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry")
    assert hist["results"] == []
    _, latest = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry/latest")
    assert latest["payload"] is None and latest["received_at"] is None


async def test_ingest_refuses_deep_nesting(alice: Api) -> None:
    device, key = await alice.claimed_device()
    hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    status, body = await alice.call("POST", INGEST, data=b"[" * 200_000, headers=hdrs)
    assert_error(status, body, 400, "invalid_json")
    _, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry")
    assert hist["results"] == []


@pytest.mark.parametrize("raw", [b'{"v": NaN}', b'{"v": -Infinity}', b'{"v": 1e999}'], ids=["nan", "-inf", "1e999"])
async def test_ingest_refuses_non_json_numbers(alice: Api, raw: bytes) -> None:
    device, key = await alice.claimed_device()
    hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    status, body = await alice.call("POST", INGEST, data=raw, headers=hdrs)
    assert_error(status, body, 400, "invalid_json")
    _, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry")
    assert hist["results"] == []


async def test_history_query_bounds(alice: Api) -> None:
    device, key = await alice.claimed_device()
    status, _ = await alice.call("POST", INGEST, {"v": 1}, headers={"Authorization": f"Bearer {key}"})
    assert status == 200
    path = f"/gateway/devices/{device['id']}/telemetry"
    for query, field in (("cursor=99999999999999999999999", "cursor"), ("cursor=0", "cursor"), ("limit=-1", "limit")):
        status, body = await alice.call("GET", f"{path}?{query}")
        assert_error(status, body, 400, "invalid_schema")
        assert [e["field"] for e in body["errors"]] == [field]
    # A huge limit is capped, not refused; a time without an offset is UTC.
    status, body = await alice.call("GET", f"{path}?limit=99999999999999999999999")
    assert (status, len(body["results"])) == (200, 1)
    status, body = await alice.call("GET", f"{path}?until=2020-01-01T00:00:00")
    assert (status, body["results"]) == (200, [])
    status, body = await alice.call("GET", f"{path}?since=2020-01-01T00:00:00")
    assert (status, len(body["results"])) == (200, 1)


async def test_ingest_wrong_content_type(alice: Api) -> None:
    device, key = await alice.claimed_device()
    status, body = await alice.call(
        "POST", INGEST, data='{"v": 1}', headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"}
    )
    assert_error(status, body, 415, "unsupported_media_type")
    _, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry")
    assert hist["results"] == []


async def test_ingest_senml_examples(alice: Api) -> None:
    device, key = await alice.claimed_device()
    hdrs = {"Authorization": f"Bearer {key}"}
    # RFC 8428 §5.1.2: multiple data points of one device, relative times from a base time.
    pack = [
        {"bn": "urn:dev:ow:10e2073a0108006:", "bt": 1.276020076001e09, "bu": "A", "bver": 5, "n": "voltage", "u": "V"}
        | {"v": 120.1},
        {"n": "current", "t": -5, "v": 1.2},
        {"n": "current", "t": -4, "v": 1.3},
    ]
    status, body = await alice.call("POST", INGEST, pack, headers=hdrs)
    assert (status, body) == (200, {"status": "ok"})
    _, latest = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry/latest")
    base = "urn:dev:ow:10e2073a0108006:"
    assert latest["payload"] == [
        {"n": f"{base}voltage", "t": 1.276020076001e09, "u": "V", "v": 120.1},
        {"n": f"{base}current", "t": 1.276020071001e09, "u": "A", "v": 1.2},
        {"n": f"{base}current", "t": 1.276020072001e09, "u": "A", "v": 1.3},
    ]
    # A plain object is stored as sent.
    reading = {"voltage": 228.4, "ok": True, "label": "A", "nested": {"x": [1, 2]}}
    status, _ = await alice.call("POST", INGEST, reading, headers=hdrs)
    assert status == 200
    _, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry")
    assert [r["payload"] for r in hist["results"]] == [reading, latest["payload"]]
    assert {r["source"] for r in hist["results"]} == {"http"}


async def test_health(server: Server, http: aiohttp.ClientSession) -> None:
    status, body = await Api(http, server.url).call("GET", "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["broker"]["status"] == "ok"
    assert body["database"]["status"] == "ok"


async def test_metrics(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(server.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    assert "# TYPE gatehouse_mqtt_connections" in text
    assert re.search(r"^gatehouse_mqtt_connections(\{[^}]*\})? \d", text, re.MULTILINE)


# --- device registry --------------------------------------------------------------------------


async def test_create_device_generated_username(alice: Api) -> None:
    status, device = await alice.call("POST", "/gateway/devices", {"name": "Factory Meter 1", "location": "Line A"})
    assert status == 201, device
    assert re.fullmatch(r"esp32-[0-9a-f]{12}", device["username"])
    assert device["name"] == "Factory Meter 1" and device["location"] == "Line A"
    assert device["kind"] == "esp32"
    assert device["online"] is False and device["last_seen"] is None
    assert device["has_api_key"] is False
    assert "api_key_hash" not in device and "api_key" not in device
    _, me = await alice.call("GET", "/me")
    assert device["owner"] == me["id"]
    status, lite = await alice.call("POST", "/gateway/devices", {"name": "lite", "kind": "gateway_lite"})
    assert status == 201
    assert re.fullmatch(r"gateway-lite-[0-9a-f]{12}", lite["username"])
    assert lite["username"] != device["username"]


async def test_create_device_custom_username_and_duplicate(alice: Api, bob: Api) -> None:
    name = unique("AA:BB:CC")
    made = {"name": "m", "username": name, "kind": "lock_gateway"}
    status, device = await alice.call("POST", "/gateway/devices", made)
    assert status == 201, device
    assert (device["username"], device["kind"]) == (name, "lock_gateway")
    # Accessories have a record of their own: they are registered by MAC under /v1/.
    status, body = await alice.call("POST", "/gateway/devices", {**made, "username": unique("x"), "kind": "accessory"})
    assert_error(status, body, 400, "invalid_schema")
    assert "/v1/accessory" in body["detail"]
    status, body = await alice.call("POST", "/gateway/devices", {"name": "again", "username": name})
    assert_error(status, body, 409, "duplicate_username")
    # Usernames are unique across owners too (they are MQTT usernames).
    status, body = await bob.call("POST", "/gateway/devices", {"name": "mine", "username": name})
    assert_error(status, body, 409, "duplicate_username")


async def test_create_device_needs_login(server: Server, http: aiohttp.ClientSession) -> None:
    status, body = await Api(http, server.url).call("POST", "/gateway/devices", {"name": "m"})
    assert_error(status, body, 401, "missing_credentials")


async def test_list_get_delete(alice: Api) -> None:
    a = await alice.new_device("one")
    b = await alice.new_device("two")
    status, listing = await alice.call("GET", "/gateway/devices")
    assert status == 200
    ids = [d["id"] for d in listing["results"]]
    assert listing["count"] == len(ids)
    assert {a["id"], b["id"]} <= set(ids)
    assert ids == sorted(ids)
    status, got = await alice.call("GET", f"/gateway/devices/{a['id']}")
    assert (status, got) == (200, a)
    status, body = await alice.call("DELETE", f"/gateway/devices/{a['id']}")
    assert (status, body) == (204, None)
    status, body = await alice.call("GET", f"/gateway/devices/{a['id']}")
    assert_error(status, body, 404, "device_not_found")
    status, body = await alice.call("DELETE", f"/gateway/devices/{a['id']}")
    assert_error(status, body, 404, "device_not_found")
    _, listing = await alice.call("GET", "/gateway/devices")
    ids = [d["id"] for d in listing["results"]]
    assert a["id"] not in ids and b["id"] in ids


async def test_delete_device_revokes_key_and_tokens(alice: Api) -> None:
    device, key = await alice.claimed_device()
    token = await alice.provision(device["id"])
    status, _ = await alice.call("DELETE", f"/gateway/devices/{device['id']}")
    assert status == 204
    status, body = await alice.call("POST", INGEST, {"v": 1}, headers={"Authorization": f"Bearer {key}"})
    assert_error(status, body, 401, "invalid_api_key")
    status, body = await alice.claim(token)
    assert_error(status, body, 404, "token_unknown")
