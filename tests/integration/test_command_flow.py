"""Commands end to end: REST -> MQTT commands/req -> device -> commands/res -> REST."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.mqtt import Client, Message
from tests.support import Api, Server

COMMAND = {"method": "setRelay", "params": {"relay": 1, "on": True}}


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Callable[[Api], Awaitable[tuple[dict[str, Any], Client]]]]:
    """A claimed device of the given user, connected and subscribed to its commands and errors."""
    opened: list[Client] = []

    async def _connect(api: Api) -> tuple[dict[str, Any], Client]:
        device, key = await api.claimed_device("relay board")
        client = Client()
        opened.append(client)
        assert await client.connect(server.mqtt_port, device["username"], key) == 0
        assert await client.subscribe(f"devices/{device['username']}/commands/req/+") == 1
        assert await client.subscribe(f"devices/{device['username']}/errors") == 1
        return device, client

    yield _connect
    for client in opened:
        client.close()


async def next_command(client: Client, username: str) -> tuple[str, Message]:
    """The next command the device receives: (req_id, message)."""
    prefix = f"devices/{username}/commands/req/"
    while True:
        msg = await client.receive(5)
        if msg.topic.startswith(prefix):
            return msg.topic[len(prefix) :], msg


async def answer(client: Client, username: str, req_id: str, body: Any) -> None:
    assert await client.publish(f"devices/{username}/commands/res/{req_id}", json.dumps(body), qos=1)


async def test_command_answered_while_caller_waits(alice: Api, connect: Any) -> None:
    device, client = await connect(alice)
    path = f"/gateway/devices/{device['id']}/commands"
    post = asyncio.create_task(alice.call("POST", path, {"command": COMMAND, "timeout": 5}))
    req_id, msg = await next_command(client, device["username"])
    assert json.loads(msg.payload) == COMMAND
    assert msg.qos == 1
    await answer(client, device["username"], req_id, {"status": "ok", "relay": 1, "state": "on"})
    status, body = await asyncio.wait_for(post, 5)
    assert status == 200, body
    assert body["req_id"] == req_id and body["device_id"] == device["id"]
    assert (body["status"], body["command"]) == ("ok", COMMAND)
    assert body["result"] == {"status": "ok", "relay": 1, "state": "on"}
    assert body["answered_at"]
    status, got = await alice.call("GET", f"{path}/{req_id}")
    assert (status, got) == (200, body)
    status, listed = await alice.call("GET", path)
    assert status == 200 and [c["req_id"] for c in listed["results"]] == [req_id]


async def test_command_without_waiting(alice: Api, connect: Any) -> None:
    device, client = await connect(alice)
    path = f"/gateway/devices/{device['id']}/commands"
    status, body = await alice.call("POST", path, {"command": {"method": "reboot"}})
    assert status == 202, body
    assert (body["status"], body["result"], body["answered_at"]) == ("pending", None, None)
    req_id, msg = await next_command(client, device["username"])
    assert req_id == body["req_id"] and json.loads(msg.payload) == {"method": "reboot"}
    await answer(client, device["username"], req_id, {"status": "error", "reason": "busy"})
    # The PUBACK comes once the answer is recorded.
    status, got = await alice.call("GET", f"{path}/{req_id}")
    assert status == 200
    assert (got["status"], got["result"]) == ("error", {"status": "error", "reason": "busy"})
    # Newest first.
    _, second = await alice.call("POST", path, {"command": {"method": "ping"}})
    _, listed = await alice.call("GET", f"{path}?limit=1")
    assert [c["req_id"] for c in listed["results"]] == [second["req_id"]]


async def test_silent_device_times_out_pending(alice: Api, connect: Any) -> None:
    device, client = await connect(alice)
    started = time.monotonic()
    status, body = await alice.call("POST", f"/gateway/devices/{device['id']}/commands", {"command": {}, "timeout": 1})
    assert time.monotonic() - started >= 1
    assert status == 202 and body["status"] == "pending"
    req_id, _ = await next_command(client, device["username"])
    assert req_id == body["req_id"]


async def test_offline_device_command_stays_pending(alice: Api) -> None:
    device, _ = await alice.claimed_device()
    path = f"/gateway/devices/{device['id']}/commands"
    status, body = await alice.call("POST", path, {"command": {"method": "ping"}, "expires_in": 60})
    assert status == 202
    _, got = await alice.call("GET", f"{path}/{body['req_id']}")
    assert got["status"] == "pending" and got["expires_at"] > got["created_at"]


async def test_only_the_owner_commands(alice: Api, bob: Api) -> None:
    device = await alice.new_device()
    path = f"/gateway/devices/{device['id']}/commands"
    status, body = await bob.call("POST", path, {"command": {"method": "unlock"}})
    assert (status, body["code"]) == (404, "device_not_found")
    _, sent = await alice.call("POST", path, {"command": {"method": "ping"}})
    for bad in (path, f"{path}/{sent['req_id']}"):
        status, body = await bob.call("GET", bad)
        assert status == 404, bad
    status, body = await alice.call("GET", f"{path}/nope")
    assert (status, body["code"]) == (404, "command_not_found")
    status, _ = await alice.call("POST", path, {"command": {}}, auth=False, headers={"Authorization": ""})
    assert status == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"command": "reboot"},
        {"command": [1, 2]},
        {"command": {}, "timeout": 31},
        {"command": {}, "timeout": -1},
        {"command": {}, "timeout": "soon"},
        {"command": {}, "expires_in": 0},
        {"command": {}, "tiemout": 5},
    ],
)
async def test_bad_bodies(alice: Api, body: Any) -> None:
    device = await alice.new_device()
    status, resp = await alice.call("POST", f"/gateway/devices/{device['id']}/commands", body)
    assert (status, resp["code"]) == (400, "invalid_schema"), resp


async def test_invalid_json_and_limit(alice: Api) -> None:
    device = await alice.new_device()
    path = f"/gateway/devices/{device['id']}/commands"
    status, resp = await alice.call("POST", path, data=b"{nope", headers={"Content-Type": "application/json"})
    assert (status, resp["code"]) == (400, "invalid_json")
    status, resp = await alice.call("GET", f"{path}?limit=0")
    assert (status, resp["code"]) == (400, "invalid_schema")


async def test_answers_refused(alice: Api, connect: Any) -> None:
    device, client = await connect(alice)
    other, intruder = await connect(alice)
    me, them = device["username"], other["username"]
    path = f"/gateway/devices/{device['id']}/commands"
    _, sent = await alice.call("POST", path, {"command": {"method": "unlock"}})
    req_id, _ = await next_command(client, me)

    # Another device cannot even publish on this device's result topic (ACL: dropped).
    await intruder.publish(f"devices/{me}/commands/res/{req_id}", json.dumps({"status": "ok"}))
    # On its own topic the req_id is not its command: refused on its errors topic.
    await answer(intruder, them, req_id, {"status": "ok"})
    error = json.loads((await intruder.receive_on(f"devices/{them}/errors")).payload)
    assert error["code"] == "command_not_found" and error["topic"] == f"devices/{them}/commands/res/{req_id}"
    _, got = await alice.call("GET", f"{path}/{req_id}")
    assert got["status"] == "pending"

    # Unknown req_id, a malformed result, then a real answer and a second one.
    await answer(client, me, "unknown-id", {"status": "ok"})
    assert json.loads((await client.receive_on(f"devices/{me}/errors")).payload)["code"] == "command_not_found"
    await answer(client, me, req_id, {"status": "done"})
    assert json.loads((await client.receive_on(f"devices/{me}/errors")).payload)["code"] == "invalid_schema"
    await answer(client, me, req_id, {"status": "ok"})
    await answer(client, me, req_id, {"status": "error"})
    error = json.loads((await client.receive_on(f"devices/{me}/errors")).payload)
    assert error["code"] == "command_already_answered"
    _, got = await alice.call("GET", f"{path}/{req_id}")
    assert (got["status"], got["result"]) == ("ok", {"status": "ok"})
    assert sent["req_id"] == req_id
