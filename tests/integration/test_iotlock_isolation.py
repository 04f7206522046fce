"""IoTLock's isolation matrix, generated: outsiders (a member of another account, users in no
account, a gooee administrator) x account A's gateway, mailbox, PIN, command and member x every route
naming them; then other things and devices x every topic of A's channels.

Out of the account answers exactly like an id nobody has (same status and body once the id is
blanked out: 404), and no row of the IoTLock tables changes. Lists leave A's objects out. On MQTT
every filter reaching A's channels is SUBACK 0x80, every publish there is dropped, and nothing of A's
reaches anyone else; the refused clients stay connected.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.iotlock import LockGateway, history, member, new_gateway, new_mailbox, settle
from tests.matrix import run_matrix, snapshot
from tests.smtp import SmtpSink
from tests.support import Api, Server, mail_env, make_server

TABLES = (
    "devices", "iotlock_accounts", "iotlock_members", "iotlock_gateways", "iotlock_mailboxes", "iotlock_pins",
    "iotlock_commands", "iotlock_history",
)  # fmt: skip
# (case, method, path, body); {gateway} {mailbox} {pin} {command} {member}
ROUTES: list[tuple[str, str, str, Any]] = [
    ("hidden", "GET", "/iotlock/gateways/{gateway}", None),
    ("hidden", "DELETE", "/iotlock/gateways/{gateway}", None),
    ("hidden", "POST", "/iotlock/gateways/{gateway}/mailboxes", {"name": "taken over", "public_key": "k"}),
    ("hidden", "GET", "/iotlock/mailboxes/{mailbox}", None),
    ("hidden", "DELETE", "/iotlock/mailboxes/{mailbox}", None),
    ("hidden", "POST", "/iotlock/mailboxes/{mailbox}/pins", {"pin": "5678"}),
    ("hidden", "DELETE", "/iotlock/mailboxes/{mailbox}/pins/{pin}", None),
    ("hidden", "POST", "/iotlock/mailboxes/{mailbox}/unlock", None),
    ("hidden", "GET", "/iotlock/mailboxes/{mailbox}/events", None),
    ("hidden", "GET", "/iotlock/commands/{command}", None),
    ("hidden", "GET", "/iotlock/commands/{command}?wait=1", None),
    ("hidden", "DELETE", "/iotlock/account/members/{member}", None),
    ("list", "GET", "/iotlock/gateways?limit=1000", None),
    ("list", "GET", "/iotlock/account", None),
]
ROLES = ("member of B", "second member of B", "alice (no account)", "admin (gooee, no account)")
EXPECTED_CASES = len(ROLES) * len(ROUTES)
MISSING = {
    "gateway": str(uuid.UUID(int=1)), "mailbox": str(uuid.UUID(int=2)), "pin": str(uuid.UUID(int=3)),
    "command": "nosuchcmd123", "member": str(uuid.UUID(int=4)),
}  # fmt: skip


@dataclass(frozen=True)
class Case:
    role: str
    api: Api
    case: str
    method: str
    path: str
    body: Any
    objects: dict[str, str]

    def fill(self, value: Any, objects: dict[str, str]) -> Any:
        text = json.dumps(value)
        for name, ident in objects.items():
            text = text.replace("{" + name + "}", ident)
        return json.loads(text)

    def __str__(self) -> str:
        return f"{self.role} {self.method} {self.path}"


@pytest.fixture(scope="module")
def lock_server(tmp_path_factory: pytest.TempPathFactory, smtpd: SmtpSink) -> Iterator[Server]:
    """A server of its own: no other test's commands expire (and change rows) during the matrix."""
    srv = make_server(Path(tmp_path_factory.mktemp("gatehouse-iotlock-isolation")), **mail_env(smtpd.port))
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


def _blank(body: Any, objects: dict[str, str]) -> str:
    text = json.dumps(body, sort_keys=True)
    for ident in objects.values():
        text = re.sub(rf"\b{re.escape(ident)}\b", "ID", text)
    return text


async def check(case: Case) -> str | None:
    path, body = case.fill(case.path, case.objects), case.fill(case.body, case.objects)
    status, answer = await case.api.call(case.method, path, body)
    if case.case == "list":
        text = json.dumps(answer)
        leaked = [name for name, ident in case.objects.items() if ident in text]
        in_account = case.role.startswith(("member", "second member"))
        expected = 200 if in_account else 404
        return None if status == expected and not leaked else f"{status}, shows {leaked}: {answer}"
    m_status, m_answer = await case.api.call(case.method, case.fill(case.path, MISSING), case.fill(case.body, MISSING))
    if (status, _blank(answer, case.objects)) != (m_status, _blank(m_answer, MISSING)):
        return f"differs from a missing id: {status} {answer} vs {m_status} {m_answer}"
    return None if status == 404 else f"{status}: {answer}"


async def test_iotlock_isolation_matrix(lock_server: Server, smtpd: SmtpSink, clients: Any) -> None:
    async with aiohttp.ClientSession() as http:
        a = await member(lock_server, http, smtpd, "A")
        gateway_a = await new_gateway(a, "a-gw")
        mailbox_a = await new_mailbox(a, gateway_a["id"], "a-box")
        status, pin = await a.call("POST", f"/iotlock/mailboxes/{mailbox_a['id']}/pins", {"pin": "4321"})
        assert status == 202, pin
        status, account_a = await a.call("GET", "/iotlock/account")
        assert status == 200, account_a
        objects = {
            "gateway": gateway_a["id"], "mailbox": mailbox_a["id"], "pin": pin["pin_id"], "command": pin["id"],
            "member": account_a["members"][0]["user_id"],
        }  # fmt: skip

        b = await member(lock_server, http, smtpd, "B")
        gateway_b = await new_gateway(b, "b-gw")
        b2_mail = f"b2-{uuid.uuid4().hex[:8]}@example.com"
        status, _ = await b.call("POST", "/iotlock/account/members", {"email": b2_mail})
        assert status == 201
        key = (await smtpd.wait_for(b2_mail))[-1].body.split("Your activation key: ")[1].split()[0]
        b2 = Api(http, lock_server.url)
        status, body = await b2.call("POST", "/users/register/", {
            "activation_key": key, "first_name": "B", "last_name": "Two", "password": "Passw0rd!x",
            "password_confirm": "Passw0rd!x"})  # fmt: skip
        assert status == 201, body
        await b2.login(b2_mail, "Passw0rd!x")
        alice, admin = Api(http, lock_server.url), Api(http, lock_server.url)
        await alice.login("alice@example.com")
        await admin.login("admin@example.com")
        roles = dict(zip(ROLES, (b, b2, alice, admin), strict=True))

        cases = [
            Case(name, api, case, method, path, body, objects)
            for name, api in roles.items()
            for case, method, path, body in ROUTES
        ]
        print(f"iotlock isolation matrix: {len(cases)} cases")
        assert len(cases) == EXPECTED_CASES
        before = await snapshot(lock_server, TABLES)
        assert before["iotlock_pins"] and before["iotlock_commands"] and before["iotlock_history"]
        await run_matrix(lock_server, TABLES, cases, check)
        status, still = await a.call("GET", f"/iotlock/gateways/{gateway_a['id']}")
        assert status == 200 and still["mailboxes"][0]["pins"][0]["id"] == pin["pin_id"], still

        await _topics(lock_server, a, b, gateway_a, mailbox_a, gateway_b, pin, clients)


async def _topics(
    server: Server,
    a: Api,
    b: Api,
    gateway_a: dict[str, Any],
    mailbox_a: dict[str, Any],
    gateway_b: dict[str, Any],
    pin: dict[str, Any],
    clients: Any,
) -> None:
    """B's gateway and alice's ESP32 x every topic of A's: refused, dropped, never delivered."""
    ga, ma = gateway_a["channel_id"], mailbox_a["channel_id"]
    filters = [
        f"channels/{ga}/messages/req/+", f"channels/{ma}/messages/req/+", f"channels/{ga}/messages/#",
        f"channels/{ma}/messages/res/+", "channels/+/messages/req/+", "channels/#", "channels/+/#", "#",
        f"devices/{gateway_a['thing_id']}/errors", f"devices/{gateway_a['thing_id']}/#",
    ]  # fmt: skip
    publishes = [
        (f"channels/{ma}/messages/res/{pin['id']}", [{"bn": f"{ma}_", "n": "AUTH", "vs": "ok"}]),
        (f"channels/{ma}/messages/res/events", [{"bn": f"{ma}_", "n": "UNLOCKED", "vs": "pin"}]),
        (f"channels/{ga}/messages/res/events", [{"bn": f"{ga}_", "n": "TAMPER", "vb": True}]),
        (f"channels/{ma}/messages/req/{pin['id']}", [{"bn": f"{ma}_", "n": "UNLOCK", "u": "Requested", "vb": True}]),
    ]
    b_gw = LockGateway(gateway_b, clients(gateway_b["thing_id"], clean_session=False))
    assert await b_gw.connect(server) == 0
    alice = Api(a.session, server.url)
    await alice.login("alice@example.com")
    device, api_key = await alice.claimed_device("meter")
    meter = clients()
    assert await meter.connect(server.mqtt_port, device["username"], api_key) == 0
    outsiders = {"B's gateway": b_gw.client, "alice's ESP32": meter}

    refused = [
        f"{who} SUBSCRIBE {f}: {code:#x}"
        for who, client in outsiders.items()
        for f in filters
        if (code := await client.subscribe(f)) != 0x80
    ]
    assert not refused, refused
    for who, client in outsiders.items():
        for topic, pack in publishes:
            assert await client.publish(topic, json.dumps(pack)), (who, topic)  # PUBACKed, dropped
    assert (await settle(a, pin["id"], wait=0))["status"] == "pending"
    assert not [h for h in await history(a, mailbox_a["id"]) if h["kind"] in ("event", "outcome")]

    status, _ = await a.call("POST", f"/iotlock/mailboxes/{mailbox_a['id']}/unlock")
    assert status == 202
    got = {who: await client.nothing() for who, client in outsiders.items()}
    a_ids = (ga, ma, gateway_a["thing_id"])
    leaked = [(who, m.topic) for who, msgs in got.items() for m in msgs if any(i in m.topic for i in a_ids)]
    assert not leaked, leaked
    assert not any(client.disconnected.is_set() for client in outsiders.values())
    # Still connected and served: B's gateway got its own commands, on its own channel, and nothing else.
    own = [(m.topic.split("/")[1], json.loads(m.payload)[0]["n"]) for m in got["B's gateway"]]
    assert own == [(gateway_b["channel_id"], "CONNECT"), (gateway_b["channel_id"], "REGISTER")], own
    assert got["alice's ESP32"] == []
    assert await b_gw.client.subscribe(f"channels/{gateway_b['channel_id']}/messages/req/+") == 1
