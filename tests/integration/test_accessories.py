"""The Hardware API's accessories over real HTTP and MQTT (spec/hardware-accessory.md)."""

from __future__ import annotations

import asyncio
import json

from tests.accessories import PASSWORD, accessory_token, hw, new_mac, register, registration
from tests.mqtt import Client
from tests.support import Api, Server


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
