"""The tenancy isolation matrix, generated: every role x every object of another tenant x every route.

Roles (all of tenant A: partner PA and its customer A1): gooee, a PA user with every permission, a PA
user with none, an A1 user with every permission, an A1 user with none. Objects of another tenant:
partner PB's (the partner, its customer B1, a group, a device, a user) for everyone, and for the A1
users also their sibling A2's (customer, group, device, user) and their own partner PA, which customer
users do not see. Every route that names such an object answers exactly as if it did not exist
(404, or for a body reference the same 400/403 a missing id gets), lists leave it out, and no row of
the database changes. Gooee is the control: every read of the same objects succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.integration.test_tenants import ALL, MISSING, Tenants
from tests.matrix import run_matrix, snapshot
from tests.support import Api, Server, make_server

MISSING_DEVICE = 2**31 - 1
INGEST = "/gateway/device-data/ingest"
TABLES = (
    "partners",
    "customers",
    "user_groups",
    "users",
    "users_user_groups",
    "users_partner_scopes",
    "users_customer_scopes",
    "devices",
    "provisioning_tokens",
    "device_claims",
    "commands",
    "telemetry",
)

# (kind of case, method, path, body) per object kind; {id} is the object's id, {req} a command of it.
# "read"/"write"/"stream" name the object in the path (404 expected); "list" must leave it out; "ref" names it
# in the body (answered like a missing id: 400 `invalid_reference`, or 403 without the permission).
ROUTES: dict[str, list[tuple[str, str, str, Any]]] = {
    "partner": [
        ("read", "GET", "/partners/{id}/", None),
        ("write", "PUT", "/partners/{id}/", {"name": "taken over"}),
        ("write", "PATCH", "/partners/{id}/", {"is_gateway_lite_provider": True}),
        ("write", "DELETE", "/partners/{id}/", None),
        ("list", "GET", "/partners/?limit=1000", None),
        ("ref", "POST", "/customers/", {"name": "planted", "partner": "{id}"}),
        ("ref", "POST", "/user_groups/", {"name": "planted", "partner": "{id}"}),
    ],
    "customer": [
        ("read", "GET", "/customers/{id}/", None),
        ("write", "PUT", "/customers/{id}/", {"name": "taken over"}),
        ("write", "PATCH", "/customers/{id}/", {"name": "taken over"}),
        ("write", "DELETE", "/customers/{id}/", None),
        ("list", "GET", "/customers/?limit=1000", None),
        ("ref", "POST", "/user_groups/", {"name": "planted", "customer": "{id}"}),
    ],
    "group": [
        ("read", "GET", "/user_groups/{id}/", None),
        ("write", "PUT", "/user_groups/{id}/", {"name": "taken over", "permissions": []}),
        ("write", "PATCH", "/user_groups/{id}/", {"permissions": []}),
        ("write", "DELETE", "/user_groups/{id}/", None),
        ("list", "GET", "/user_groups/?limit=1000", None),
    ],
    "device": [
        ("read", "GET", "/gateway/devices/{id}", None),
        ("write", "DELETE", "/gateway/devices/{id}", None),
        ("write", "POST", "/gateway/devices/{id}/provision", {"notes": "mine now"}),
        ("read", "GET", "/gateway/devices/{id}/claims", None),
        ("read", "GET", "/gateway/devices/{id}/telemetry/latest", None),
        ("read", "GET", "/gateway/devices/{id}/telemetry", None),
        ("write", "POST", "/gateway/devices/{id}/commands", {"command": {"relay": 1}}),
        ("read", "GET", "/gateway/devices/{id}/commands", None),
        ("read", "GET", "/gateway/devices/{id}/commands/{req}", None),
        ("write", "DELETE", "/gateway/devices/{id}/api_key", None),
        ("list", "GET", "/gateway/devices", None),
        # The console's live stream of one device (an open stream never ends: not run for gooee).
        ("stream", "GET", "/console/events?device={id}", None),
    ],
    "user": [
        ("read", "GET", "/users/{id}/permissions", None),
    ],
}
NOT_FOUND = {
    "partner": "partner_not_found",
    "customer": "customer_not_found",
    "group": "user_group_not_found",
    "device": "device_not_found",
    "user": "user_not_found",
}
# Which permission a "ref" case needs to get past the permission check (then 400 like a missing id).
REF_NEEDS = {"/customers/": ("partner", "manage_customers"), "/user_groups/": (None, "manage_user_groups")}

# The size the generation must come to:
#   per set of five objects (partner 7 + customer 6 + group 5 + device 12 + user 1) = 31 routes;
#   the PA users: PB's set = 31 each; the A1 users: PB's set + A2's set with PA = 62 each;
#   gooee: the reads and lists of PB's set = 2 + 2 + 2 + 7 + 1 = 14.
EXPECTED_CASES = 14 + 2 * 31 + 2 * 62


@dataclass(frozen=True)
class Role:
    name: str
    api: Api
    account_type: str
    permissions: frozenset[str]


@dataclass(frozen=True)
class Case:
    role: Role
    owner: str  # whose object: "PB" or "A2"
    kind: str
    obj_id: str
    req_id: str
    case: str
    method: str
    path: str
    body: Any

    def __str__(self) -> str:
        return f"{self.role.name} {self.method} {self.path} ({self.owner}'s {self.kind}, {self.case})"


@pytest.fixture(scope="module")
def iso_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("gatehouse-isolation"))
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


def _fill(value: Any, obj_id: str, req_id: str) -> Any:
    if isinstance(value, str):
        return value.replace("{id}", obj_id).replace("{req}", req_id)
    if isinstance(value, dict):
        return {k: _fill(v, obj_id, req_id) for k, v in value.items()}
    return value


def generate(roles: list[Role], objects: dict[str, dict[str, dict[str, str]]]) -> list[Case]:
    """Every case of the matrix. `objects[owner][kind]` is {"id", "req"}."""
    cases = []
    for role in roles:
        owners = ["PB"] + (["A2"] if role.account_type == "customer" else [])
        for owner in owners:
            for kind, routes in ROUTES.items():
                obj = objects[owner][kind]
                for case, method, path, body in routes:
                    if role.account_type == "gooee" and case not in ("read", "list"):
                        continue  # gooee may change anything: its reads are the control
                    cases.append(
                        Case(
                            role,
                            owner,
                            kind,
                            obj["id"],
                            obj.get("req", ""),
                            case,
                            method,
                            _fill(path, obj["id"], obj.get("req", "")),
                            _fill(body, obj["id"], obj.get("req", "")),
                        )
                    )
    return cases


def _anonymised(body: Any, *ids: str) -> str:
    text = json.dumps(body, sort_keys=True)
    for ident in ids:
        text = text.replace(ident, "N")
    return text


def _missing(case: Case) -> tuple[str, Any]:
    """The same request naming something that does not exist."""
    other = str(MISSING_DEVICE) if case.kind == "device" else MISSING
    path = case.path.replace(case.obj_id, other)
    body = json.loads(json.dumps(case.body).replace(case.obj_id, other)) if case.body is not None else None
    return path, body


async def check(case: Case) -> str | None:
    """None when the case holds; otherwise what went wrong."""
    api = case.role.api
    status, body = await api.call(case.method, case.path, case.body)
    if case.case == "list":
        listed = {str(r["id"]) for r in body["results"]} if status == 200 else set()
        seen = case.obj_id in listed
        want_seen = case.role.account_type == "gooee"
        return None if status == 200 and seen == want_seen else f"{status}, listed={seen}: {body}"
    if case.role.account_type == "gooee":
        return None if status == 200 else f"{status}: {body}"
    missing_path, missing_body = _missing(case)
    m_status, m_body = await api.call(case.method, missing_path, missing_body)
    if (status, _anonymised(body, case.obj_id)) != (m_status, _anonymised(m_body, str(MISSING_DEVICE), MISSING)):
        return f"differs from a missing id: {status} {body} vs {m_status} {m_body}"
    if case.case == "ref":
        field, permission = REF_NEEDS[case.path]
        allowed = permission in case.role.permissions and (field != "partner" or case.role.account_type == "partner")
        want = (400, "invalid_reference") if allowed else (403, "permission_denied")
    else:
        want = (404, NOT_FOUND[case.kind])
    got = (status, body.get("code") if isinstance(body, dict) else None)
    return None if got == want else f"{got}, expected {want}: {body}"


async def test_isolation_matrix(iso_server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        admin = Api(http, iso_server.url)
        await admin.login("admin@example.com")
        t = Tenants(iso_server, http, admin)
        pa, pb = await t.partner("PA"), await t.partner("PB")
        a1, a2, b1 = await t.customer(pa, "A1"), await t.customer(pa, "A2"), await t.customer(pb, "B1")
        roles = [
            Role("gooee", admin, "gooee", frozenset(ALL)),
            Role("PA-all", await t.user("partner", pa, ALL), "partner", frozenset(ALL)),
            Role("PA-none", await t.user("partner", pa), "partner", frozenset()),
            Role("A1-all", await t.user("customer", a1, ALL), "customer", frozenset(ALL)),
            Role("A1-none", await t.user("customer", a1), "customer", frozenset()),
        ]
        objects: dict[str, dict[str, dict[str, str]]] = {}
        for owner, user, partner, customer, group_tenant in (
            ("PB", await t.user("partner", pb, ALL), pb, b1, {"partner": pb["id"]}),
            ("A2", await t.user("customer", a2, ALL), pa, a2, {"customer": a2["id"]}),
        ):
            device, key = await user.claimed_device(f"{owner}'s meter")
            status, _ = await user.call("POST", INGEST, {"kwh": 1}, headers={"Authorization": f"Bearer {key}"})
            assert status == 200
            status, command = await admin.call(
                "POST", f"/gateway/devices/{device['id']}/commands", {"command": {"m": 1}, "expires_in": 86400}
            )
            assert status == 202, command
            group = await t.group(["add_device"], **group_tenant)
            objects[owner] = {
                "partner": {"id": partner["id"]},
                "customer": {"id": customer["id"]},
                "group": {"id": group["id"]},
                "device": {"id": str(device["id"]), "req": command["req_id"]},
                "user": {"id": user.id},  # type: ignore[attr-defined]
            }
        # The A1 users' "other tenant" partner is their own PA (customer users see no partner); PB's
        # set keeps PB. Both sets of objects are otherwise as made above.
        objects["A2"]["partner"] = {"id": pa["id"]}

        cases = generate(roles, objects)
        n = len(cases)
        print(f"isolation matrix: {n} cases")
        assert n == EXPECTED_CASES
        assert len({(c.role.name, c.method, c.path, json.dumps(c.body)) for c in cases}) == n - _duplicate_lists(cases)

        before = await snapshot(iso_server, TABLES)
        assert before["devices"] and before["commands"] and before["telemetry"] and before["users_user_groups"]
        await run_matrix(iso_server, TABLES, cases, check)


def _duplicate_lists(cases: list[Case]) -> int:
    """List routes do not name the object: the same request appears once per object it must leave out."""
    seen: set[tuple[str, str]] = set()
    dupes = 0
    for c in cases:
        if c.case == "list":
            key = (c.role.name, c.path)
            dupes += key in seen
            seen.add(key)
    return dupes
