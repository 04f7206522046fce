"""The REST routes the console stands on: live updates (GET /console/events), revoking a device's
key, the claim payload's QR code, the gooee admin lists, and the console's own files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from tests.mqtt import Client
from tests.support import Api, Server, new_user
from tests.tenants import unique


class Stream:
    """An open GET /console/events: its events as (name, data), read as they arrive."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, timeout: float = 5) -> tuple[str, dict[str, Any]]:
        name = data = None
        while True:
            line = (await asyncio.wait_for(self.resp.content.readline(), timeout)).decode()
            if not line:
                raise EOFError("the stream ended")
            if line.startswith("event: "):
                name = line[7:].strip()
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "\n" and name:
                return name, data or {}

    async def until(self, match: Any, timeout: float = 10) -> tuple[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(max(0.01, deadline - loop.time()))
            if match(*event):
                return event

    async def drain(self, seconds: float) -> list[tuple[str, dict[str, Any]]]:
        """Everything that arrives within `seconds`."""
        got: list[tuple[str, dict[str, Any]]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                got.append(await self.next(left))
            except TimeoutError:
                break
        return got


@asynccontextmanager
async def events(api: Api, query: str = "") -> AsyncIterator[Stream]:
    headers = {"Authorization": f"Bearer {api.token}"}
    async with api.session.get(f"{api.base}/console/events{query}", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/event-stream"
        yield Stream(resp)


async def test_a_stream_starts_with_the_callers_devices_and_follows_telemetry_and_presence(
    server: Server, alice: Api, bob: Api
) -> None:
    device, key = await alice.claimed_device(unique("live"))
    bobs, _ = await bob.claimed_device(unique("bobs"))
    async with events(alice) as stream, events(bob) as other:
        first = await stream.until(lambda n, d: n == "device" and d["id"] == device["id"])
        assert first[1]["online"] is False and first[1]["last_payload"] is None
        client = Client()
        try:
            assert await client.connect(server.mqtt_port, device["username"], key) == 0
            online = await stream.until(lambda n, d: n == "device" and d["id"] == device["id"])
            assert online[1]["online"] is True
            assert await client.publish(f"devices/{device['username']}/telemetry", '{"t": 7.5}', qos=1)
            sample = await stream.until(lambda n, d: n == "device" and d["id"] == device["id"] and d["last_payload"])
            assert sample[1]["last_payload"] == {"t": 7.5} and sample[1]["last_payload_at"]
        finally:
            client.close()
        # Bob's stream: his own device, never alice's, however long it runs.
        seen = [d.get("id") for _, d in await other.drain(2.5)]
        assert bobs["id"] in seen and device["id"] not in seen
        # Deleted: gone from the page within a re-read of its scope (5 s).
        status, _ = await alice.call("DELETE", f"/gateway/devices/{device['id']}")
        assert status == 204
        await stream.until(lambda n, d: n == "removed" and d == {"id": device["id"]})


async def test_a_device_stream_follows_its_commands_and_nothing_else(server: Server, alice: Api) -> None:
    device, key = await alice.claimed_device(unique("cmd"))
    await alice.claimed_device(unique("other"))  # its state must not reach this stream
    async with events(alice, f"?device={device['id']}") as stream:
        status, sent = await alice.call("POST", f"/gateway/devices/{device['id']}/commands", {"command": {"m": 1}})
        assert status == 202, sent
        pending = await stream.until(lambda n, d: n == "command")
        assert pending[1]["req_id"] == sent["req_id"] and pending[1]["status"] == "pending"
        client = Client()
        try:
            assert await client.connect(server.mqtt_port, device["username"], key) == 0
            topic = f"devices/{device['username']}/commands/res/{sent['req_id']}"
            assert await client.publish(topic, '{"status": "ok"}', qos=1)
            done = await stream.until(lambda n, d: n == "command" and d["status"] == "ok")
            assert done[1]["result"] == {"status": "ok"}
        finally:
            client.close()
        rest = await stream.drain(1.5)
        assert all(d.get("id", device["id"]) == device["id"] for n, d in rest if n == "device")


async def test_stream_refusals_are_json_errors(server: Server, alice: Api, bob: Api) -> None:
    device = await alice.new_device(unique("private"))
    async with alice.session.get(f"{server.url}/console/events") as resp:
        assert resp.status == 401 and (await resp.json())["code"] == "missing_credentials"
    for query in (f"?device={device['id']}", "?device=2147483647"):
        status, body = await bob.call("GET", f"/console/events{query}")
        assert status == 404 and body["code"] == "device_not_found", body
    for query in ("?device=0", "?device=abc", "?device=99999999999"):
        status, body = await bob.call("GET", f"/console/events{query}")
        assert status == 400 and body["code"] == "invalid_schema", (query, body)


async def test_a_stream_ends_when_its_user_is_deactivated(
    server: Server, http: aiohttp.ClientSession, admin: Api
) -> None:
    user = await new_user(server, http, "gone")
    _, me = await user.call("GET", "/me")
    async with events(user) as stream:
        await stream.drain(0.5)
        status, body = await admin.call("POST", f"/users/{me['id']}/deactivate/")
        assert status == 200, body
        _, data = await stream.until(lambda n, d: n == "end", timeout=40)
        assert data == {"code": "account_not_active"}
        assert await stream.resp.content.read() == b""  # and the server closed it


async def test_provisioning_answers_the_claim_payload_and_its_qr_code(server: Server, alice: Api) -> None:
    device = await alice.new_device(unique("qr"))
    status, body = await alice.call("POST", f"/gateway/devices/{device['id']}/provision", {})
    assert status == 201, body
    payload = json.loads(body["claim_payload"])
    assert payload["token"] == body["token"] and set(payload) == {"claim_url", "token"}
    assert payload["claim_url"].endswith("/gateway/devices/claim")
    assert body["qr_code"].startswith("data:image/png;base64,")
    status, claimed = await alice.claim(payload["token"])
    assert status == 200, claimed


async def test_revoking_a_key_cuts_the_device_off_until_a_new_claim(server: Server, alice: Api, bob: Api) -> None:
    device, key = await alice.claimed_device(unique("revoked"))
    spare = await alice.provision(device["id"])  # issued before the revocation: void after it
    client = Client()
    assert await client.connect(server.mqtt_port, device["username"], key) == 0
    path = f"/gateway/devices/{device['id']}/api_key"
    status, body = await bob.call("DELETE", path)
    assert status == 404 and body["code"] == "device_not_found"
    status, _ = await alice.call("DELETE", path)
    assert status == 204
    assert await client.wait_disconnected(5), "the connection made with the revoked key stays up"
    client.close()
    assert await Client().connect(server.mqtt_port, device["username"], key) != 0
    ingest = {"Authorization": f"Bearer {key}"}
    status, body = await alice.call("POST", "/gateway/device-data/ingest", {"t": 1}, headers=ingest)
    assert status == 401 and body["code"] == "invalid_api_key"
    status, body = await alice.call("DELETE", path)
    assert status == 409 and body["code"] == "no_api_key"
    _, view = await alice.call("GET", f"/gateway/devices/{device['id']}")
    assert view["has_api_key"] is False
    status, body = await alice.claim(spare)
    assert status == 410 and body["code"] == "token_expired", body
    # A new token, claimed, replaces the key.
    status, claimed = await alice.claim(await alice.provision(device["id"]))
    assert status == 200
    assert await Client().connect(server.mqtt_port, device["username"], claimed["api_key"]) == 0
    lite = await alice.new_device(unique("lite"), kind="gateway_lite")
    status, body = await alice.call("DELETE", f"/gateway/devices/{lite['id']}/api_key")
    assert status == 409 and body["code"] == "no_api_key"


async def test_admin_lists_are_gooee_only_searchable_and_hold_no_secrets(alice: Api, admin: Api) -> None:
    name = unique("audited")
    device = await alice.new_device(name)
    status, issued = await alice.call("POST", f"/gateway/devices/{device['id']}/provision", {"notes": "audit me"})
    assert status == 201
    status, claimed = await alice.claim(issued["token"])
    assert status == 200
    status, _ = await alice.call(
        "POST", "/gateway/device-data/ingest", {"kw": 3}, headers={"Authorization": f"Bearer {claimed['api_key']}"}
    )
    assert status == 200
    await alice.provision(device["id"], notes="spare")
    for route in ("tokens", "credentials", "telemetry"):
        status, body = await alice.call("GET", f"/admin/{route}")
        assert status == 403 and body["code"] == "permission_denied", route
        status, body = await admin.call("GET", f"/admin/{route}?search={name.upper()}")
        assert status == 200, body
        text = json.dumps(body)
        assert issued["token"] not in text and claimed["api_key"] not in text, route
        assert body["results"] and all(name in json.dumps(r) for r in body["results"]), route
    _, tokens = await admin.call("GET", f"/admin/tokens?search={name}")
    assert [(t["notes"], t["state"]) for t in tokens["results"]] == [("spare", "unused"), ("audit me", "used")]
    _, creds = await admin.call("GET", f"/admin/credentials?search={device['username']}")
    (cred,) = creds["results"]
    assert cred["owner"] == "alice@example.com" and cred["issued_at"] and cred["last_used"]
    _, samples = await admin.call("GET", f"/admin/telemetry?search={name}")
    assert [s["payload"] for s in samples["results"]] == [{"kw": 3}]
    _, page = await admin.call("GET", f"/admin/tokens?search={name}&limit=1")
    assert len(page["results"]) == 1 and page["next_cursor"]
    _, rest = await admin.call("GET", f"/admin/tokens?search={name}&limit=1&cursor={page['next_cursor']}")
    assert [t["notes"] for t in rest["results"]] == ["audit me"] and rest["next_cursor"] is None
    status, body = await admin.call("GET", "/admin/tokens?limit=0")
    assert status == 400 and body["code"] == "invalid_schema"
    _, none = await admin.call("GET", f"/admin/telemetry?search={unique('nothing')}")
    assert none == {"results": [], "next_cursor": None}


async def test_the_console_files_are_ours_only(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/console", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/console/"
    async with http.get(f"{server.url}/console/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        page = await resp.text()
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
    for name in ("console.js", "console.css", "favicon.svg"):
        async with http.get(f"{server.url}/console/static/{name}") as resp:
            assert resp.status == 200, name
            assert "https://" not in await resp.text()
    for name in ("index.html", "../console.py", "%2e%2e%2fconsole.py", "nope.js"):
        async with http.get(f"{server.url}/console/static/{name}") as resp:
            assert resp.status == 404, name
            assert (await resp.json())["code"] == "unknown_endpoint"
