"""Test support for IoTLock: a member registered and activated through the real mail, and a gateway
that speaks the contract of docs/iotlock.md over a real MQTT connection (it keeps PINs, answers
commands on request and types PINs at a mailbox's keypad)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import aiohttp

from tests.mqtt import Client, Message
from tests.smtp import SmtpSink
from tests.support import PASSWORD, Api, Server

KEY = re.compile(r"Your activation key: (\S+)")


async def member(server: Server, http: aiohttp.ClientSession, smtpd: SmtpSink, account: str = "Home") -> Api:
    """A new IoTLock account's first member, activated with the key from the mail and logged in."""
    email = f"lock-{uuid.uuid4().hex[:10]}@example.com"
    api = Api(http, server.url)
    status, body = await api.call("POST", "/iotlock/register", {
        "email": email, "password": PASSWORD, "first_name": "Lou", "last_name": "Locks", "account_name": account,
    })  # fmt: skip
    assert status == 201, body
    mail = (await smtpd.wait_for(email))[-1]
    key = KEY.search(mail.body).group(1)  # type: ignore[union-attr]
    status, body = await api.call("POST", "/iotlock/activate", {"activation_key": key})
    assert status == 200, body
    await api.login(email)
    api.email = email  # type: ignore[attr-defined]
    return api


async def new_gateway(api: Api, name: str = "porch") -> dict[str, Any]:
    status, body = await api.call("POST", "/iotlock/gateways", {"name": name, "public_key": f"pk-{name}"})
    assert status == 201, body
    return body


async def new_mailbox(api: Api, gateway_id: str, name: str = "front") -> dict[str, Any]:
    status, body = await api.call(
        "POST", f"/iotlock/gateways/{gateway_id}/mailboxes", {"name": name, "public_key": f"mpk-{name}"}
    )
    assert status == 201, body
    return body


class LockGateway:
    """The firmware's side: connects as its thing (persistent session), holds PINs per channel."""

    def __init__(self, gateway: dict[str, Any], client: Client) -> None:
        self.info = gateway
        self.client = client
        self.pins: dict[str, set[int]] = {}  # channel id -> PINs held

    @property
    def thing(self) -> str:
        return self.info["thing_id"]

    async def connect(self, server: Server, *, tls: bool = False) -> int:
        mqtt = self.info["mqtt"]
        port = server.mqtts_port if tls else server.mqtt_port
        return await self.client.connect(port, mqtt["username"], mqtt["password"], ca=server.ca if tls else None)

    async def command(self, timeout: float = 5) -> tuple[str, str, list[dict[str, Any]]]:
        """The next command: (channel id, command id, pack)."""
        msg = await self.client.receive(timeout)
        levels = msg.topic.split("/")
        assert levels[0] == "channels" and levels[2:4] == ["messages", "req"], msg.topic
        return levels[1], levels[4], json.loads(msg.payload)

    async def answer(self, channel: str, command_id: str, pack: list[dict[str, Any]], ok: bool = True) -> None:
        """Do what the command says (PINs) and answer it."""
        record = pack[0]
        if ok and record["n"] == "AUTH":
            self.pins.setdefault(channel, set()).add(record["v"])
        if ok and record["n"] == "UNAUTH":
            self.pins.setdefault(channel, set()).discard(record["v"])
        answer = [{"bn": record["bn"], "n": record["n"], "vs": "ok" if ok else "error"}]
        if not ok:
            answer.append({"n": "reason", "vs": "refused by the test"})
        assert await self.client.publish(f"channels/{channel}/messages/res/{command_id}", json.dumps(answer))

    async def serve(self, count: int, timeout: float = 5) -> list[str]:
        """Answer the next `count` commands; their actions in order."""
        actions = []
        for _ in range(count):
            channel, command_id, pack = await self.command(timeout)
            await self.answer(channel, command_id, pack)
            actions.append(pack[0]["n"])
        return actions

    async def enter_pin(self, channel: str, pin: int) -> str:
        """Someone types `pin` at the mailbox's keypad: UNLOCKED if held, PIN_REJECTED otherwise."""
        held = pin in self.pins.get(channel, set())
        record: dict[str, Any] = {"bn": f"{channel}_", "n": "UNLOCKED", "vs": "pin"}
        if not held:
            record = {"bn": f"{channel}_", "n": "PIN_REJECTED", "vb": True}
        assert await self.client.publish(f"channels/{channel}/messages/res/events", json.dumps([record]))
        return record["n"]

    async def error(self, timeout: float = 5) -> dict[str, Any]:
        msg: Message = await self.client.receive_on(f"devices/{self.thing}/errors", timeout)
        return json.loads(msg.payload)


async def settle(api: Api, command_id: str, wait: float = 5) -> dict[str, Any]:
    status, body = await api.call("GET", f"/iotlock/commands/{command_id}?wait={wait}")
    assert status == 200, body
    return body


async def history(api: Api, mailbox_id: str) -> list[dict[str, Any]]:
    status, body = await api.call("GET", f"/iotlock/mailboxes/{mailbox_id}/events?limit=1000")
    assert status == 200, body
    return body["results"]


async def until(check: Any, timeout: float = 5) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(0.05)
