"""Tenancy: a customer sees only their own devices; someone else's look exactly like missing ones."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support import Api, Server

INGEST = "/gateway/device-data/ingest"


def assert_error(status: int, body: Any, want_status: int, code: str) -> None:
    assert status == want_status, body
    assert isinstance(body, dict) and set(body) == {"detail", "code", "errors"}, body
    assert body["code"] == code, body


async def _alices_device(alice: Api) -> tuple[dict[str, Any], str]:
    device, key = await alice.claimed_device("alice's meter")
    status, _ = await alice.call("POST", INGEST, {"kwh": 1234.5}, headers={"Authorization": f"Bearer {key}"})
    assert status == 200
    return device, key


async def test_other_customer_gets_404_not_403(alice: Api, bob: Api) -> None:
    device, key = await _alices_device(alice)
    missing_id = device["id"] + 10_000_000
    base = f"/gateway/devices/{device['id']}"
    for method, suffix, body in (
        ("GET", "", None),
        ("GET", "/telemetry/latest", None),
        ("GET", "/telemetry", None),
        ("GET", "/claims", None),
        ("POST", "/provision", {"notes": "mine now"}),
        ("DELETE", "", None),
    ):
        status, theirs = await bob.call(method, base + suffix, body)
        assert_error(status, theirs, 404, "device_not_found")
        # Indistinguishable from a device that does not exist (only the id in the text differs).
        status, missing = await bob.call(method, f"/gateway/devices/{missing_id}{suffix}", body)
        assert_error(status, missing, 404, "device_not_found")
        assert theirs["detail"].replace(str(device["id"]), "N") == missing["detail"].replace(str(missing_id), "N")
        assert dict(bob.last_headers).get("Status") is None
    # Nothing bob tried changed alice's device: it is there, its key works, no token was issued.
    status, still = await alice.call("GET", base)
    assert status == 200 and still["has_api_key"]
    status, _ = await alice.call("POST", INGEST, {"kwh": 1235}, headers={"Authorization": f"Bearer {key}"})
    assert status == 200
    _, claims = await alice.call("GET", base + "/claims")
    assert len(claims["results"]) == 1


async def test_list_shows_only_own_devices(alice: Api, bob: Api) -> None:
    device, _ = await _alices_device(alice)
    bobs = await bob.new_device("bob's meter")
    _, bob_list = await bob.call("GET", "/gateway/devices")
    bob_ids = {d["id"] for d in bob_list["results"]}
    assert bobs["id"] in bob_ids
    assert device["id"] not in bob_ids
    _, me = await bob.call("GET", "/me")
    assert {d["owner"] for d in bob_list["results"]} == {me["id"]}
    assert bob_list["count"] == len(bob_list["results"])
    _, alice_list = await alice.call("GET", "/gateway/devices")
    alice_ids = {d["id"] for d in alice_list["results"]}
    assert device["id"] in alice_ids and bobs["id"] not in alice_ids


async def test_admin_sees_and_reads_everyone(alice: Api, bob: Api, admin: Api) -> None:
    device, _ = await _alices_device(alice)
    bobs = await bob.new_device("bob's meter")
    _, listing = await admin.call("GET", "/gateway/devices")
    ids = {d["id"] for d in listing["results"]}
    assert {device["id"], bobs["id"]} <= ids
    base = f"/gateway/devices/{device['id']}"
    status, got = await admin.call("GET", base)
    assert status == 200 and got["username"] == device["username"]
    status, latest = await admin.call("GET", base + "/telemetry/latest")
    assert status == 200 and latest["payload"] == {"kwh": 1234.5}
    status, hist = await admin.call("GET", base + "/telemetry")
    assert status == 200 and [r["payload"] for r in hist["results"]] == [{"kwh": 1234.5}]
    status, claims = await admin.call("GET", base + "/claims")
    assert status == 200 and len(claims["results"]) == 1
    # The device stays alice's when an admin provisions it.
    status, issued = await admin.call("POST", base + "/provision", {})
    assert status == 201
    status, _ = await alice.claim(issued["token"])
    assert status == 200
    _, got = await alice.call("GET", base)
    assert got["owner"] == device["owner"]
    status, _ = await admin.call("DELETE", f"/gateway/devices/{bobs['id']}")
    assert status == 204
    status, body = await bob.call("GET", f"/gateway/devices/{bobs['id']}")
    assert_error(status, body, 404, "device_not_found")


async def test_device_reads_need_login(server: Server, http: aiohttp.ClientSession, alice: Api) -> None:
    """The spec's unauthenticated `telemetry/latest` debug helper must not leak readings."""
    device, key = await _alices_device(alice)
    anon = Api(http, server.url)
    base = f"/gateway/devices/{device['id']}"
    for method, suffix in (
        ("GET", "/telemetry/latest"),
        ("GET", "/telemetry"),
        ("GET", "/claims"),
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/provision"),
    ):
        status, body = await anon.call(method, base + suffix, {} if method == "POST" else None)
        assert_error(status, body, 401, "missing_credentials")
        assert "kwh" not in str(body)
    status, body = await anon.call("GET", "/gateway/devices")
    assert_error(status, body, 401, "missing_credentials")
    # A device's API key is not a user's token either.
    status, body = await anon.call("GET", base + "/telemetry/latest", headers={"Authorization": f"Bearer {key}"})
    assert_error(status, body, 401, "token_invalid")
