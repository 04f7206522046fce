"""The ESP32 flow end to end: provision -> claim -> telemetry (MQTT and HTTP) -> latest/history."""

from __future__ import annotations

import json

import pytest

from tests.mqtt import Client
from tests.support import Api, Server, eventually


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_provision_claim_mqtt_telemetry_latest(server: Server, alice: Api, tls: bool) -> None:
    device = await alice.new_device("Factory Meter 1")
    token = await alice.provision(device["id"], notes="Line A ESP32")
    status, claim = await alice.claim(token, {"fw": "1.0.0"})
    assert status == 200, claim
    assert claim["device_id"] == device["id"]
    assert claim["ingest_url"].endswith("/gateway/device-data/ingest")
    assert claim["token_expires_at"] is None
    mqtt = claim["mqtt"]
    assert mqtt["username"] == device["username"]
    assert mqtt["telemetry_topic"] == f"devices/{device['username']}/telemetry"

    client = Client()
    port = server.mqtts_port if tls else server.mqtt_port
    rc = await client.connect(port, mqtt["username"], claim["api_key"], ca=server.ca if tls else None)
    assert rc == 0
    try:
        reading = {"voltage": 228.4, "current": 3.2, "power_factor": 0.97, "kwh": 1234.5}
        assert await client.publish(mqtt["telemetry_topic"], json.dumps(reading), qos=1)
        # PUBACK means committed: the latest value is there at once, no polling.
        status, latest = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry/latest")
        assert status == 200
        assert latest["payload"] == reading
        assert latest["received_at"]
    finally:
        client.close()


async def test_http_ingest_same_pipeline(alice: Api) -> None:
    device, key = await alice.claimed_device()
    reading = {"voltage": 230.1}
    status, body = await alice.call(
        "POST", "/gateway/device-data/ingest", reading, headers={"Authorization": f"Bearer {key}"}
    )
    assert (status, body) == (200, {"status": "ok"})
    status, latest = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry/latest")
    assert latest["payload"] == reading
    status, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry")
    assert status == 200
    assert [r["payload"] for r in hist["results"]] == [reading]
    assert hist["results"][0]["source"] == "http"


async def test_senml_pack_is_resolved(alice: Api) -> None:
    device, key = await alice.claimed_device()
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e09, "bu": "A", "n": "current", "v": 1.2},
        {"n": "voltage", "u": "V", "v": 120.1, "t": 1},
    ]
    status, _ = await alice.call(
        "POST", "/gateway/device-data/ingest", pack, headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 200
    _, latest = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry/latest")
    assert latest["payload"] == [
        {"n": "urn:dev:ow:10e2073a01080063:current", "t": 1.320067464e09, "u": "A", "v": 1.2},
        {"n": "urn:dev:ow:10e2073a01080063:voltage", "t": 1.320067465e09, "u": "V", "v": 120.1},
    ]


async def test_history_newest_first_paginated(alice: Api) -> None:
    device, key = await alice.claimed_device()
    for i in range(5):
        status, _ = await alice.call(
            "POST", "/gateway/device-data/ingest", {"seq": i}, headers={"Authorization": f"Bearer {key}"}
        )
        assert status == 200
    path = f"/gateway/devices/{device['id']}/telemetry"
    _, page1 = await alice.call("GET", f"{path}?limit=2")
    assert [r["payload"]["seq"] for r in page1["results"]] == [4, 3]
    _, page2 = await alice.call("GET", f"{path}?limit=2&cursor={page1['next_cursor']}")
    assert [r["payload"]["seq"] for r in page2["results"]] == [2, 1]
    _, page3 = await alice.call("GET", f"{path}?limit=2&cursor={page2['next_cursor']}")
    assert [r["payload"]["seq"] for r in page3["results"]] == [0]
    assert page3["next_cursor"] is None
    status, body = await alice.call("GET", f"{path}?limit=0")
    assert status == 400 and body["code"] == "invalid_schema"
    status, body = await alice.call("GET", f"{path}?since=yesterday")
    assert status == 400


async def test_mqtt_claim_accepted_and_rejected(server: Server, alice: Api) -> None:
    device = await alice.new_device()
    token = await alice.provision(device["id"])
    client = Client("esp32-setup-1")
    assert await client.connect(server.mqtt_port, "provision", "") == 0
    try:
        assert await client.subscribe("provisioning/esp32-setup-1/+") == 1
        await client.publish(
            "provisioning/esp32-setup-1/claim", json.dumps({"token": token, "device_metadata": {"fw": "2.0"}})
        )
        msg = await client.receive_on("provisioning/esp32-setup-1/accepted")
        body = json.loads(msg.payload)
        assert body["device_id"] == device["id"] and body["api_key"]
        assert body["mqtt"]["username"] == device["username"]
        # The same token again: rejected, saying why.
        await client.publish("provisioning/esp32-setup-1/claim", json.dumps({"token": token}))
        msg = await client.receive_on("provisioning/esp32-setup-1/rejected")
        assert json.loads(msg.payload)["code"] == "token_used"
        await client.publish("provisioning/esp32-setup-1/claim", b"{not json")
        msg = await client.receive_on("provisioning/esp32-setup-1/rejected")
        assert json.loads(msg.payload)["code"] == "invalid_json"
    finally:
        client.close()
    # The key from the MQTT claim works, and the claim is listed with its door.
    dev = Client()
    assert await dev.connect(server.mqtt_port, device["username"], body["api_key"]) == 0
    dev.close()
    _, claims = await alice.call("GET", f"/gateway/devices/{device['id']}/claims")
    assert [c["source"] for c in claims["results"]] == ["mqtt"]
    assert claims["results"][0]["metadata"] == {"fw": "2.0"}


async def test_presence_online_offline(server: Server, alice: Api) -> None:
    device, key = await alice.claimed_device()
    watcher_dev = Client()
    assert await watcher_dev.connect(server.mqtt_port, device["username"], key) == 0
    status_topic = f"devices/{device['username']}/status"

    async def online() -> bool:
        _, d = await alice.call("GET", f"/gateway/devices/{device['id']}")
        return d["online"] and d["last_seen"] is not None

    await eventually(online)
    assert await watcher_dev.subscribe(status_topic) == 1
    msg = await watcher_dev.receive_on(status_topic)
    assert (msg.payload, msg.retain) == (b"online", True)
    watcher_dev.close()

    async def offline() -> bool:
        _, d = await alice.call("GET", f"/gateway/devices/{device['id']}")
        return not d["online"]

    await eventually(offline)
