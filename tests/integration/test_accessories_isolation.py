"""The accessories' tenancy matrix, generated: every role x every accessory out of its view x every
Hardware API route that names an accessory.

Roles: gooee (the control: it sees everything), a partner PA user with every permission and one
with none, a customer A1 user with every permission and one with none, a user without a tenant
(alice), and an accessory of A1 holding its own token. Accessories out of view: partner PB's (for
everyone), customer A2's (for the A1 users, alice and the accessory), and a sibling accessory of
A1 (for the accessory token, which sees only itself). For a user role, the accessory's own token
is never sent: each request carries the role's credentials.

Out of view answers exactly like a MAC nobody registered (same status, same body once the MAC is
blanked out): reads and writes 404 `accessory_not_found` (an accessory's token may not delete at
all: 403 for any MAC), a login with a wrong password 401. Registering the same MAC again is 409
DuplicateMacAddress for every user (the MAC's existence is the one thing a registration reveals,
docs/decisions.md). The devices list leaves the accessory out. No row of the database changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.accessories import JSON, accessory_token, new_mac, register, registration
from tests.integration.test_tenants import ALL, Tenants
from tests.matrix import run_matrix, snapshot
from tests.support import Api, Server, make_server

TABLES = ("devices", "accessories", "users", "telemetry")
ROUTES: list[tuple[str, str, str, Any]] = [
    ("read", "GET", "/v1/accessory/{mac}", None),
    ("read", "GET", "/v1/accessory/{upper}", None),  # another spelling of the same MAC
    ("write", "PATCH", "/v1/accessory/{mac}", {"firmware_version": "9.9.9"}),
    ("write", "PATCH", "/v1/accessory/{mac}", {"settings_key": "taken over"}),
    ("write", "DELETE", "/v1/accessory/{mac}", None),
    ("login", "POST", "/v1/accessory/{mac}/login", {"password": "not-the-password"}),
    ("register", "POST", "/v1/accessory/{mac}/register", registration()),
    ("list", "GET", "/gateway/devices", None),
]
# gooee: 2 reads + list, per accessory (PB's, A2's, A1's sibling); the other users: 8 routes per
# accessory out of view (PA users: PB's; A1 users and alice: PB's and A2's); the accessory token:
# the 7 /v1/ routes for each of the three others.
EXPECTED_CASES = 3 * 3 + 2 * 8 + 3 * 2 * 8 + 3 * 7


@dataclass(frozen=True)
class Role:
    name: str
    api: Api
    kind: str  # gooee, partner, customer, tenantless, accessory
    token: str = ""  # an accessory's own token, sent instead of the user's
    may_register: bool = True

    async def call(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        headers = dict(JSON)
        if self.token:
            headers["Authorization"] = self.token
        return await self.api.call(method, path, body, headers=headers)


@dataclass(frozen=True)
class Case:
    role: Role
    owner: str
    mac: str
    device_id: int
    case: str
    method: str
    template: str
    body: Any

    @property
    def path(self) -> str:
        return _path(self.template, self.mac)

    def __str__(self) -> str:
        return f"{self.role.name} {self.method} {self.path} ({self.owner}'s accessory, {self.case})"


@pytest.fixture(scope="module")
def iso_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # every role tries a wrong password on the same accessories: no per-account lockout here (the
    # limit is tested in test_accessories.py and test_accessory_mqtt.py)
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-accessory-isolation"), GATEHOUSE_LIMITS__ACCESSORY_LOGIN__PER_ACCOUNT=""
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


def _path(path: str, mac: str) -> str:
    return path.replace("{mac}", mac).replace("{upper}", mac.upper().replace(":", "-"))


def generate(roles: list[Role], accessories: dict[str, dict[str, Any]]) -> list[Case]:
    out_of_view = {
        "gooee": ["PB", "A2", "A1-sibling"],
        "partner": ["PB"],
        "customer": ["PB", "A2"],
        "tenantless": ["PB", "A2"],
        "accessory": ["PB", "A2", "A1-sibling"],
    }
    cases = []
    for role in roles:
        for owner in out_of_view[role.kind]:
            acc = accessories[owner]
            for case, method, path, body in ROUTES:
                if role.kind == "gooee" and case not in ("read", "list"):
                    continue
                if role.kind == "accessory" and case == "list":
                    continue  # not a route an accessory's token opens (401 for any token of that audience)
                cases.append(Case(role, owner, acc["mac_address"], acc["device_id"], case, method, path, body))
    return cases


def _blanked(body: Any, mac: str) -> str:
    text = json.dumps(body, sort_keys=True)
    for spelling in (mac, mac.upper().replace(":", "-")):
        text = text.replace(spelling, "MAC")
    return text


async def check(case: Case) -> str | None:
    role = case.role
    status, body = await role.call(case.method, case.path, case.body)
    if case.case == "list":
        listed = {r["id"] for r in body.get("results", [])} if status == 200 else set()
        seen, want_seen = case.device_id in listed, role.kind == "gooee"
        return None if status == 200 and seen == want_seen else f"{status}, listed={seen}: {body}"
    if role.kind == "gooee":
        return None if status == 200 and body["mac_address"] == case.mac else f"{status}: {body}"
    if case.case == "register":
        # an accessory's token and a user without add_device may not register at all
        want = (409, "duplicate_mac_address") if role.may_register else (403, "permission_denied")
        got = (status, body.get("code"))
        if got == (409, "duplicate_mac_address") and role.api.last_headers.get("Status") != "DuplicateMacAddress":
            return f"409 without Status: DuplicateMacAddress: {role.api.last_headers}"
        return None if got == want else f"{got}, expected {want}: {body}"
    missing = new_mac(0x06)
    m_status, m_body = await role.call(case.method, _path(case.template, missing), case.body)
    if (status, _blanked(body, case.mac)) != (m_status, _blanked(m_body, missing)):
        return f"differs from a MAC nobody registered: {status} {body} vs {m_status} {m_body}"
    if case.case == "login":
        want = (401, "invalid_credentials")
    elif role.kind == "accessory" and case.method == "DELETE":
        want = (403, "permission_denied")
    else:
        want = (404, "accessory_not_found")
    got = (status, body.get("code") if isinstance(body, dict) else None)
    return None if got == want else f"{got}, expected {want}: {body}"


async def test_accessory_isolation_matrix(iso_server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        admin = Api(http, iso_server.url)
        await admin.login("admin@example.com")
        alice = Api(http, iso_server.url)
        await alice.login("alice@example.com")
        t = Tenants(iso_server, http, admin)
        pa, pb = await t.partner("PA"), await t.partner("PB")
        a1, a2, b1 = await t.customer(pa, "A1"), await t.customer(pa, "A2"), await t.customer(pb, "B1")
        a1_owner = await t.user("customer", a1, ALL)
        accessories = {
            "PB": await register(await t.user("customer", b1, ALL)),
            "A2": await register(await t.user("customer", a2, ALL)),
            "A1-sibling": await register(a1_owner),
        }
        own = (await register(a1_owner))["mac_address"]
        roles = [
            Role("gooee", admin, "gooee"),
            Role("PA-all", await t.user("partner", pa, ALL), "partner"),
            Role("PA-none", await t.user("partner", pa), "partner", may_register=False),
            Role("A1-all", await t.user("customer", a1, ALL), "customer"),
            Role("A1-none", await t.user("customer", a1), "customer", may_register=False),
            Role("alice", alice, "tenantless"),
            Role("A1-accessory", alice, "accessory", await accessory_token(alice, own), False),
        ]
        # the control: each accessory is seen by the users it belongs to
        for owner, acc in accessories.items():
            status, _ = await roles[1].call("GET", f"/v1/accessory/{acc['mac_address']}", None)
            assert status == (200 if owner in ("A2", "A1-sibling") else 404), owner  # PA sees its customers'
        status, itself = await roles[-1].call("GET", f"/v1/accessory/{own}", None)
        assert status == 200 and itself["mac_address"] == own, itself

        cases = generate(roles, accessories)
        n = len(cases)
        print(f"accessory isolation matrix: {n} cases")
        assert n == EXPECTED_CASES
        before = await snapshot(iso_server, TABLES)
        assert len(before["accessories"]) == 4
        await run_matrix(iso_server, TABLES, cases, check)
