"""The Hardware API's accessories over real HTTP and MQTT (spec/hardware-accessory.md)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import aiohttp
import jwt
import pytest

from tests.accessories import JSON, PASSWORD, accessory_token, hw, new_mac, register, registration
from tests.mqtt import Client
from tests.support import Api, Server, make_server


async def test_register_login_read_patch_delete(alice: Api, server: Server) -> None:
    mac = new_mac()
    upper = mac.upper().replace(":", "-")
    status, body = await hw(alice, "POST", f"/accessory/{upper}/register", {
        "password": PASSWORD, "hardwareModel": "Model T", "firmwareVersion": "1.0", "settingsKey": "123456",
    })  # fmt: skip
    assert status == 201, body
    assert alice.last_headers["Content-Type"].startswith("application/json")
    assert body["mac_address"] == mac and body["hardware_model"] == "Model T" and body["firmware_version"] == "1.0"
    status, again = await hw(alice, "POST", f"/accessory/{mac.replace(':', '')}/register", registration())
    assert status == 409 and alice.last_headers["Status"] == "DuplicateMacAddress", again

    token = await accessory_token(alice, mac)
    status, seen = await hw(alice, "GET", f"/accessory/{mac}", headers={"Authorization": token})  # bare form
    assert status == 200 and seen["mac_address"] == mac, seen
    status, changed = await hw(alice, "PATCH", f"/accessory/{mac}", {"firmware_version": "1.1"},
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert status == 200 and changed["firmware_version"] == "1.1", changed
    status, refused = await hw(alice, "PATCH", f"/accessory/{mac}", {"hardware_model": "X"})
    assert status == 400 and alice.last_headers["Status"] == "InvalidSchema", refused

    client = Client()
    assert await client.connect(server.mqtts_port, mac, token, ca=server.ca) == 0
    assert await client.publish(f"devices/{mac}/telemetry", json.dumps({"t": 21.5}))
    status, latest = await alice.call("GET", f"/gateway/devices/{body['device_id']}/telemetry/latest")
    assert status == 200 and latest["payload"] == {"t": 21.5}, latest

    status, gone = await hw(alice, "DELETE", f"/accessory/{mac}")
    assert status == 200 and gone["mac_address"] == mac, gone
    assert await asyncio.to_thread(client.disconnected.wait, 5)
    status, _ = await hw(alice, "GET", f"/accessory/{mac}", headers={"Authorization": token})
    assert status == 401


async def test_common_provisions(alice: Api) -> None:
    mac = new_mac()
    status, body = await alice.call("POST", f"/v1/accessory/{mac}/register", registration())  # Accept: */*
    assert status == 415 and alice.last_headers["Content-Type"].startswith("application/json"), body
    status, body = await hw(alice, "GET", "/nothing/here")
    assert status == 404 and alice.last_headers["Status"] == "UnknownEndpoint", body
    status, body = await hw(alice, "POST", "/accessory/1d:3a:42:5d:g5:ea/register", registration())
    assert status == 400 and alice.last_headers["Status"] == "InvalidSchema" and "g5" in body["detail"], body
    assert (await register(alice))["owner"]


# --- MAC addresses, version numbers, bodies -------------------------------------------------------

BAD_MACS = {
    "spec example with g": "1d:3a:42:5d:g5:ea",
    "five octets": "1d:3a:42:5d:a5",
    "seven octets": "1d:3a:42:5d:a5:ea:01",
    "mixed separators": "1d:3a-42:5d:a5:ea",
    "dots": "1d3a.425d.a5ea",
    "one-digit octet": "1d:3a:42:5d:a5:e",
    "three-digit octet": "1d:3a:42:5d:a5:eaa",
    "eleven digits": "1d3a425da5e",
    "thirteen digits": "1d3a425da5eaa",
    "space inside": "1d:3a:42:5d:a5:%20ea",
    "leading space": "%201d:3a:42:5d:a5:ea",
    "trailing newline": "1d:3a:42:5d:a5:ea%0A",
    "unicode digits": "1d:3a:42:5d:a5:\u0661\u0662",
    "doubled separator": "1d::3a:42:5d:a5:ea",
    "words": "not-a-mac",
    "too long": "ab" * 200,
}


@pytest.mark.parametrize("raw", list(BAD_MACS.values()), ids=list(BAD_MACS))
async def test_malformed_mac_is_invalid_schema_everywhere(alice: Api, raw: str) -> None:
    for method, path, body in (
        ("POST", f"/accessory/{raw}/register", registration()),
        ("POST", f"/accessory/{raw}/login", {"password": PASSWORD}),
        ("GET", f"/accessory/{raw}", None),
        ("PATCH", f"/accessory/{raw}", {"settings_key": "k"}),
        ("DELETE", f"/accessory/{raw}", None),
    ):
        status, answer = await hw(alice, method, path, body)
        assert status == 400, (method, raw, answer)
        assert alice.last_headers["Status"] == "InvalidSchema", (method, raw)
        assert answer["code"] == "invalid_schema" and answer["errors"][0]["field"] == "mac_address", answer


async def test_every_spelling_of_a_mac_is_one_accessory(alice: Api) -> None:
    mac = new_mac()
    octets = mac.split(":")
    spellings = [mac.upper(), "-".join(octets), "-".join(octets).upper(), "".join(octets), "".join(octets).upper(),
                 ":".join(o.upper() if i % 2 else o for i, o in enumerate(octets))]  # fmt: skip
    made = await register(alice, spellings[0])
    assert made["mac_address"] == mac
    for spelling in spellings:
        status, seen = await hw(alice, "GET", f"/accessory/{spelling}")
        assert status == 200 and seen["mac_address"] == mac, (spelling, seen)
        status, again = await hw(alice, "POST", f"/accessory/{spelling}/register", registration())
        assert status == 409 and alice.last_headers["Status"] == "DuplicateMacAddress", (spelling, again)
        assert again["code"] == "duplicate_mac_address"
    assert await accessory_token(alice, "".join(octets).upper())


BAD_VERSIONS = ["1", "01.0", "1.", ".1", "1..0", "1.0.0.0.0", "v1.0", "1.0-beta", "1.0\n", " 1.0", "1.0 ", "", "1,0",
                "\u0661.0", "1.0123456789"]  # fmt: skip


@pytest.mark.parametrize("version", [*BAD_VERSIONS, 1.0, 1, None, ["1.0"]], ids=repr)
async def test_malformed_version_number(alice: Api, version: object) -> None:
    mac = new_mac()
    status, body = await hw(alice, "POST", f"/accessory/{mac}/register", registration(firmware_version=version))
    assert status == 400 and alice.last_headers["Status"] == "InvalidSchema", body
    assert [e["field"] for e in body["errors"]] == ["firmware_version"], body
    status, _ = await hw(alice, "GET", f"/accessory/{mac}")
    assert status == 404  # nothing half-written


@pytest.mark.parametrize("version", ["1.0", "0.0", "2.3.11", "10.0.1.7", "123456789.0"])
async def test_version_numbers(alice: Api, version: str) -> None:
    assert (await register(alice, firmware_version=version))["firmware_version"] == version


BAD_BODIES = {
    "short password": ({"password": "1234567"}, ["password"]),
    "leading space": ({"password": " abcdefgh"}, ["password"]),
    "trailing space": ({"password": "abcdefgh "}, ["password"]),
    "empty model": ({"hardware_model": ""}, ["hardware_model"]),
    "long model": ({"hardware_model": "m" * 257}, ["hardware_model"]),
    "empty settings key": ({"settings_key": ""}, ["settings_key"]),
    "long settings key": ({"settings_key": "k" * 257}, ["settings_key"]),
    "number settings key": ({"settings_key": 123456}, ["settings_key"]),
    "unknown field": ({"colour": "red"}, ["colour"]),
    "both spellings": ({"hardwareModel": "Model T"}, ["hardware_model"]),
}


@pytest.mark.parametrize("change,fields", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
async def test_registration_body_rules(alice: Api, change: dict[str, object], fields: list[str]) -> None:
    mac = new_mac()
    status, body = await hw(alice, "POST", f"/accessory/{mac}/register", registration(**change))
    assert status == 400 and alice.last_headers["Status"] == "InvalidSchema", body
    assert [e["field"] for e in body["errors"]] == fields, body
    for name in fields:
        assert name in body["detail"]


@pytest.mark.parametrize("missing", ["password", "hardware_model", "firmware_version", "settings_key"])
async def test_registration_needs_every_field(alice: Api, missing: str) -> None:
    body = registration()
    del body[missing]
    status, answer = await hw(alice, "POST", f"/accessory/{new_mac()}/register", body)
    assert status == 400 and [e["field"] for e in answer["errors"]] == [missing], answer


@pytest.mark.parametrize("raw", ["", "[]", '"x"', "{", "null", '{"password": NaN}'])
async def test_registration_needs_a_json_object(alice: Api, raw: str) -> None:
    status, answer = await hw(alice, "POST", f"/accessory/{new_mac()}/register", data=raw,
                              headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 400 and answer["code"] in ("invalid_schema", "invalid_json"), answer
    assert alice.last_headers["Content-Type"].startswith("application/json")


async def test_patch_rules(alice: Api) -> None:
    mac = (await register(alice))["mac_address"]
    for body, field in (
        ({"hardware_model": "X"}, "hardware_model"),
        ({"hardwareModel": "X"}, "hardware_model"),
        ({"firmware_version": "1"}, "firmware_version"),
        ({"settings_key": ""}, "settings_key"),
        ({"settings_key": None}, "settings_key"),
        ({"password": "newpassword"}, "password"),
        ({"settingsKey": "a", "settings_key": "b"}, "settings_key"),
        ({}, ""),
    ):
        status, answer = await hw(alice, "PATCH", f"/accessory/{mac}", body)
        assert status == 400 and alice.last_headers["Status"] == "InvalidSchema", (body, answer)
        assert [e["field"] for e in answer["errors"]] == [field], (body, answer)
    status, answer = await hw(alice, "PATCH", f"/accessory/{mac}", {"settingsKey": "new", "firmware_version": "2.0"})
    assert status == 200 and (answer["settings_key"], answer["firmware_version"]) == ("new", "2.0"), answer
    assert answer["hardware_model"] == "Model T" and answer["modified"] >= answer["created"]
    status, seen = await hw(alice, "GET", f"/accessory/{mac}")
    assert seen == answer


# --- the common provisions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept,ok",
    [(None, False), ("*/*", False), ("text/html", False), ("application/json; q=0", False),
     ("application/xml", False), ("application/json", True), ("text/html, application/json;q=0.5", True),
     ("Application/JSON", True), ("application/json; charset=utf-8", True)],
)  # fmt: skip
async def test_accept_header(alice: Api, accept: str | None, ok: bool) -> None:
    mac = (await register(alice))["mac_address"]
    async with alice.session.get(
        f"{alice.base}/v1/accessory/{mac}",
        headers={"Authorization": alice.token or "", **({"Accept": accept} if accept else {})},
        skip_auto_headers=["Accept"],
    ) as resp:
        body = await resp.json()
        assert resp.headers["Content-Type"].startswith("application/json")
    assert (resp.status == 200) if ok else (resp.status == 415 and body["code"] == "unsupported_media_type"), body


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_a_body_must_say_it_is_json(alice: Api, ctype: str | None) -> None:
    mac = (await register(alice))["mac_address"]
    headers = {**JSON, "Authorization": alice.token or "", **({"Content-Type": ctype} if ctype else {})}
    for method, path, raw in (("POST", f"/accessory/{new_mac()}/register", json.dumps(registration())),
                              ("POST", f"/accessory/{mac}/login", json.dumps({"password": PASSWORD})),
                              ("PATCH", f"/accessory/{mac}", json.dumps({"settings_key": "k"}))):  # fmt: skip
        async with alice.session.request(
            method, f"{alice.base}/v1{path}", data=raw.encode(), headers=headers, skip_auto_headers=["Content-Type"]
        ) as resp:
            body = await resp.json()
        assert resp.status == 415 and resp.headers["Content-Type"].startswith("application/json"), (method, body)
    status, seen = await hw(alice, "GET", f"/accessory/{mac}")
    assert status == 200 and seen["settings_key"] == "123456"  # the refused PATCH changed nothing


async def test_unknown_endpoints_and_methods(alice: Api) -> None:
    for path in ("/nothing", "/accessory", "/accessory/", f"/accessory/{new_mac()}/unknown", "/accessories/x"):
        status, body = await hw(alice, "GET", path)
        assert status == 404 and alice.last_headers["Status"] == "UnknownEndpoint", (path, body)
        assert alice.last_headers["Content-Type"].startswith("application/json")
    status, body = await hw(alice, "PUT", f"/accessory/{new_mac()}", {"settings_key": "k"})
    assert status == 405 and "Allow" in alice.last_headers and body["code"] == "method_not_allowed", body


def _jwt(claims: dict[str, object], secret: str) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_tokens_that_do_not_count(alice: Api, server: Server) -> None:
    mac = (await register(alice))["mac_address"]
    secret = (server.data_dir / "jwt.secret").read_text().strip()
    now = int(time.time())
    good = await accessory_token(alice, mac)
    claims = jwtlib_claims(good)
    user_claims = jwtlib_claims(alice.token or "")
    tokens = {
        "missing": None,
        "empty bearer": "Bearer ",
        "garbage": "not.a.jwt",
        "two words": "Token abc",
        "other key, accessory claims": _jwt(claims, "another-secret-" * 3),
        "other key, user claims": _jwt(user_claims, "another-secret-" * 3),
        "wrong audience": _jwt({**claims, "aud": "somebody-else"}, secret),
        "expired accessory token": _jwt({**claims, "exp": now - 60}, secret),
        "expired user token": _jwt({**user_claims, "exp": now - 60}, secret),
        "wrong nonce": _jwt({**claims, "nonce": "0" * 32}, secret),
        "no typ": _jwt({k: v for k, v in claims.items() if k != "typ"}, secret),
        "alg none": jwt.encode(claims, key=None, algorithm="none"),
    }
    for name, token in tokens.items():
        headers = {} if token is None else {"Authorization": token}
        status, body = await hw(alice, "GET", f"/accessory/{mac}", headers=headers, auth=token is not None)
        assert status == 401, (name, body)
        assert alice.last_headers["Content-Type"].startswith("application/json"), name
    for form in (good, f"Bearer {good}", f"bearer {good}", alice.token, f"Bearer {alice.token}"):
        status, body = await hw(alice, "GET", f"/accessory/{mac}", headers={"Authorization": form or ""})
        assert status == 200, (form, body)


def jwtlib_claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_an_accessory_token_opens_only_its_own_accessory(alice: Api) -> None:
    mine = (await register(alice))["mac_address"]
    other = (await register(alice))["mac_address"]
    token = {"Authorization": await accessory_token(alice, mine)}
    status, body = await hw(alice, "GET", f"/accessory/{other}", headers=token)
    assert status == 404 and body["code"] == "accessory_not_found", body
    status, body = await hw(alice, "PATCH", f"/accessory/{other}", {"settings_key": "x"}, headers=token)
    assert status == 404, body
    status, body = await hw(alice, "POST", f"/accessory/{new_mac()}/register", registration(), headers=token)
    assert status == 403 and body["code"] == "permission_denied", body
    status, body = await hw(alice, "DELETE", f"/accessory/{mine}", headers=token)
    assert status == 403 and body["code"] == "permission_denied", body
    for path in ("/gateway/devices", "/me", "/users/"):  # user routes take users' tokens only
        status, body = await alice.call("GET", path, headers=token)
        assert status == 401, (path, body)
    status, body = await hw(alice, "GET", f"/accessory/{mine}", headers=token)
    assert status == 200


async def test_login_refusals_look_alike_and_are_limited(tmp_path_factory: pytest.TempPathFactory,
                                                         http: aiohttp.ClientSession) -> None:  # fmt: skip
    srv = make_server(tmp_path_factory.mktemp("accessory-limits"),
                      GATEHOUSE_LIMITS__ACCESSORY_LOGIN__PER_ACCOUNT="3 per hour")  # fmt: skip
    try:
        alice = Api(http, srv.url)
        await alice.login("alice@example.com")
        mac = (await register(alice))["mac_address"]
        wrong = await hw(alice, "POST", f"/accessory/{mac}/login", {"password": "wrong-password"}, auth=False)
        unknown = await hw(alice, "POST", f"/accessory/{new_mac()}/login", {"password": "wrong-password"}, auth=False)
        assert wrong == unknown and wrong[0] == 401 and wrong[1]["code"] == "invalid_credentials", (wrong, unknown)
        await hw(alice, "POST", f"/accessory/{mac}/login", {"password": "wrong-again"}, auth=False)
        await hw(alice, "POST", f"/accessory/{mac}/login", {"password": "and-again"}, auth=False)
        status, body = await hw(alice, "POST", f"/accessory/{mac}/login", {"password": PASSWORD}, auth=False)
        assert status == 429 and int(alice.last_headers["Retry-After"]) > 0, body
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


async def test_tls_only(tmp_path_factory: pytest.TempPathFactory, http: aiohttp.ClientSession) -> None:
    srv = make_server(tmp_path_factory.mktemp("accessory-tls-only"), GATEHOUSE_HTTP__TLS_ONLY="true")
    try:
        plain = Api(http, srv.url)
        await plain.login("alice@example.com")  # the rest of the API stays on the plain port
        status, body = await hw(plain, "POST", f"/accessory/{new_mac()}/register", registration())
        assert status == 403 and body["code"] == "https_required", body
        context = ssl.create_default_context(cafile=str(srv.ca))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as tls_session:
            secure = Api(tls_session, srv.https_url)
            secure.token = plain.token
            made = await register(secure)
            status, seen = await hw(secure, "GET", f"/accessory/{made['mac_address']}")
            assert status == 200 and seen["mac_address"] == made["mac_address"], seen
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


async def test_concurrent_registrations_of_one_mac(alice: Api, bob: Api) -> None:
    mac = new_mac()
    spellings = [mac, mac.upper(), mac.replace(":", "-"), mac.replace(":", "")] * 2
    results = await asyncio.gather(
        *(hw(who, "POST", f"/accessory/{s}/register", registration(settings_key=str(i)))
          for i, (who, s) in enumerate(zip([alice, bob] * 4, spellings, strict=True)))
    )  # fmt: skip
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 7, results


async def test_a_deleted_and_registered_again_mac_refuses_old_tokens(alice: Api) -> None:
    mac = (await register(alice))["mac_address"]
    old = await accessory_token(alice, mac)
    status, _ = await hw(alice, "DELETE", f"/accessory/{mac}")
    assert status == 200
    status, body = await hw(alice, "GET", f"/accessory/{mac}")
    assert status == 404 and body["code"] == "accessory_not_found"
    await register(alice, mac, password="another-password")
    status, _ = await hw(alice, "GET", f"/accessory/{mac}", headers={"Authorization": old})
    assert status == 401
    status, _ = await hw(alice, "POST", f"/accessory/{mac}/login", {"password": PASSWORD}, auth=False)
    assert status == 401
    assert await accessory_token(alice, mac, "another-password")
