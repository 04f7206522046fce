"""Accessories over MQTT against a real server: CONNECT with the canonical MAC and the accessory's
token or password, over TCP and TLS; every wrong credential refused at CONNECT (rc 5); telemetry
through the devices' pipeline and ACL; a malformed payload answered on the errors topic without
touching other clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import aiohttp
import jwt
import pytest

from tests.accessories import PASSWORD, accessory_token, hw, new_mac, register
from tests.mqtt import Client
from tests.support import Api, Server, make_server

REFUSED = 0x87  # paho 2.x's reason code for CONNACK return code 5, "not authorized"


async def connect(clients: Callable[..., Client], server: Server, user: str, password: str, tls: bool) -> int:
    client = clients()
    if tls:
        return await client.connect(server.mqtts_port, user, password, ca=server.ca)
    return await client.connect(server.mqtt_port, user, password)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("credential", ["token", "password"])
async def test_connect_and_publish(
    alice: Api, server: Server, clients: Callable[..., Client], tls: bool, credential: str
) -> None:
    record = await register(alice)
    mac = record["mac_address"]
    secret = await accessory_token(alice, mac) if credential == "token" else PASSWORD
    client = clients()
    port = server.mqtts_port if tls else server.mqtt_port
    assert await client.connect(port, mac, secret, ca=server.ca if tls else None) == 0
    sample = [{"bn": f"urn:dev:mac:{mac}:", "n": "temp", "u": "Cel", "v": 22.5}]
    assert await client.publish(f"devices/{mac}/telemetry", json.dumps(sample))
    status, latest = await alice.call("GET", f"/gateway/devices/{record['device_id']}/telemetry/latest")
    assert status == 200, latest
    assert json.dumps(sample[0]["v"]) in json.dumps(latest["payload"]), latest


def _resigned(token: str, key: str, **changes: object) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode({**claims, **changes}, key, algorithm="HS256")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_wrong_credentials_refused_at_connect(
    alice: Api, bob: Api, server: Server, clients: Callable[..., Client], tls: bool
) -> None:
    mine = (await register(alice))["mac_address"]
    other = (await register(alice))["mac_address"]
    bobs = (await register(bob))["mac_address"]
    token = await accessory_token(alice, mine)
    gone = (await register(alice))["mac_address"]
    gone_token = await accessory_token(alice, gone)
    status, _ = await hw(alice, "DELETE", f"/accessory/{gone}")
    assert status == 200
    cases = {
        "wrong password": (mine, PASSWORD + "x"),
        "empty password": (mine, ""),
        "another accessory's token": (mine, await accessory_token(alice, other)),
        "another tenant's accessory's token": (mine, await accessory_token(bob, bobs)),
        "a user's access token": (mine, alice.token),
        "token signed with another key": (mine, _resigned(token, "another-secret-" * 3)),
        "token with the users' audience": (mine, _resigned(token, "another-secret-" * 3, aud="gatehouse")),
        "token with its signature cut": (mine, token.rsplit(".", 1)[0] + ".AAAA"),
        "deleted accessory's token": (gone, gone_token),
        "deleted accessory's password": (gone, PASSWORD),
        "MAC in upper case": (mine.upper(), token),
        "MAC with dashes": (mine.replace(":", "-"), token),
        "MAC without separators": (mine.replace(":", ""), PASSWORD),
        "unknown MAC": (new_mac(), PASSWORD),
    }
    for name, (user, password) in cases.items():
        assert await connect(clients, server, user, password, tls) == REFUSED, name
    assert await connect(clients, server, mine, token, tls) == 0  # and the right one still works


@pytest.fixture(scope="module")
def short_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Access tokens that live 1.2 seconds; two failed accessory passwords per account."""
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-short-tokens"),
        GATEHOUSE_AUTH__ACCESS_TOKEN_MINUTES="0.02",
        GATEHOUSE_LIMITS__ACCESSORY_LOGIN__PER_ACCOUNT="2 per hour",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


async def test_expired_token_refused_at_connect(short_server: Server, clients: Callable[..., Client]) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, short_server.url)
        await api.login("alice@example.com")
        mac = (await register(api))["mac_address"]
        status, body = await hw(api, "POST", f"/accessory/{mac}/login", {"password": PASSWORD}, auth=False)
        assert status == 200 and body["expires_in"] <= 2, body
        fresh = body["access_token"]
        assert await connect(clients, short_server, mac, fresh, tls=True) == 0
        await asyncio.sleep(2.5)
        for tls in (False, True):
            assert await connect(clients, short_server, mac, fresh, tls) == REFUSED


async def test_password_guessing_over_mqtt_is_limited(short_server: Server, clients: Callable[..., Client]) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, short_server.url)
        await api.login("alice@example.com")
        mac = (await register(api))["mac_address"]
        other = (await register(api))["mac_address"]  # now: the user's token lives 1.2 seconds
        for _ in range(2):
            assert await connect(clients, short_server, mac, "wrong-guess-1", tls=False) == REFUSED
        # the budget is spent: the right password is refused too, over MQTT and over HTTP
        assert await connect(clients, short_server, mac, PASSWORD, tls=False) == REFUSED
        status, body = await hw(api, "POST", f"/accessory/{mac}/login", {"password": PASSWORD}, auth=False)
        assert status == 429 and "Retry-After" in api.last_headers, body
        # another accessory's budget is its own
        assert await connect(clients, short_server, other, PASSWORD, tls=False) == 0


async def test_acl_and_malformed_payloads(alice: Api, bob: Api, server: Server, clients: Callable[..., Client]) -> None:
    mac = (await register(alice))["mac_address"]
    record = await register(alice)
    neighbour = record["mac_address"]
    bobs = (await register(bob))["mac_address"]
    client = clients()
    assert await client.connect(server.mqtts_port, mac, await accessory_token(alice, mac), ca=server.ca) == 0
    bystander = clients()
    assert await bystander.connect(server.mqtt_port, neighbour, PASSWORD) == 0
    assert await bystander.subscribe(f"devices/{neighbour}/commands") in (0, 1)

    # another device's topics, in the same tenant and another: refused subscriptions, dropped publishes
    for target in (neighbour, bobs):
        assert await client.subscribe(f"devices/{target}/commands") == 0x80, target
        assert await client.subscribe(f"devices/{target}/#") == 0x80, target
        await client.publish(f"devices/{target}/telemetry", json.dumps({"forged": 1}))
        await client.publish(f"devices/{target}/commands", json.dumps({"forged": 1}))
    assert await client.subscribe("devices/#") == 0x80
    assert await client.subscribe("#") == 0x80
    assert await bystander.nothing(0.5) == []
    status, latest = await alice.call("GET", f"/gateway/devices/{record['device_id']}/telemetry/latest")
    assert status == 404 or latest.get("payload") is None, latest

    # malformed payloads: answered on the accessory's own errors topic, nobody disconnected
    assert await client.subscribe(f"devices/{mac}/errors") == 1
    for payload, code in [(b"not json", "invalid_json"), (b"42", "invalid_telemetry"), (b"[1]", "invalid_senml")]:
        assert await client.publish(f"devices/{mac}/telemetry", payload)
        error = json.loads((await client.receive_on(f"devices/{mac}/errors")).payload)
        assert error["code"] == code, (payload, error)
    assert not client.disconnected.is_set() and not bystander.disconnected.is_set()
    assert await bystander.publish(f"devices/{neighbour}/telemetry", json.dumps({"ok": 1}))
    status, latest = await alice.call("GET", f"/gateway/devices/{record['device_id']}/telemetry/latest")
    assert status == 200 and latest["payload"] == {"ok": 1}, latest
