"""The users routes across tenants, as a generated matrix: every role x every kind of target user x
every users route. Out of tenant answers 404 (as a missing user does); in tenant without the
permission 403; nothing denied changes the database; what is allowed works."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support import Api, Server, fetch
from tests.tenants import Tenants, email

ROLES = ("gooee", "partner_all", "partner_none", "customer_all", "customer_none")
TARGETS = ("other_partner", "other_customer", "own_tenant")
# (name, method, path, body, read): `read` routes are allowed to whoever sees the user.
ROUTES: tuple[tuple[str, str, str, Any, bool], ...] = (
    ("get", "GET", "/users/{id}/", None, True),
    ("list", "GET", "/users/", None, True),
    ("put", "PUT", "/users/{id}/", "put", False),
    ("patch", "PATCH", "/users/{id}/", {"first_name": "Changed", "tags": ["x"]}, False),
    ("delete", "DELETE", "/users/{id}/", None, False),
    ("activate", "POST", "/users/{id}/activate/", None, False),
    ("deactivate", "POST", "/users/{id}/deactivate/", None, False),
    ("prefs_get", "GET", "/users/{id}/preferences", None, False),
    ("prefs_put", "PUT", "/users/{id}/preferences/", "prefs", False),
    ("prefs_patch", "PATCH", "/users/{id}/preferences", {"timezone": "Europe/Paris"}, False),
    ("create", "POST", "/users/", "create", False),
)
PREFS = {"date_format": "DD/MM/YYYY", "number_format": "fr_FR", "timezone": "UTC", "use_24": True, "use_local": False}
OK = {"get": 200, "list": 200, "put": 200, "patch": 200, "delete": 204, "activate": 200, "deactivate": 200,
      "prefs_get": 200, "prefs_put": 200, "prefs_patch": 200, "create": 201}  # fmt: skip


@dataclass
class World:
    tenants: Tenants
    callers: dict[str, Api]
    tenant_of: dict[tuple[str, str], dict[str, Any]]  # (role, target) -> {"account_type", "partner"/"customer"}


async def build_world(server: Server, http: aiohttp.ClientSession, admin: Api) -> World:
    t = Tenants(server, admin)
    p1, p2 = await t.partner(), await t.partner()
    c1, c1b, c2 = await t.customer(p1), await t.customer(p1), await t.customer(p2)
    partner_admins = await t.group(["manage_customer_users", "manage_partner_users"], partner=p1)
    customer_admins = await t.group(["manage_customer_users"], customer=c1)
    callers = {
        "gooee": admin,
        "partner_all": await t.user("partner", http=http, partner=p1, groups=[partner_admins]),
        "partner_none": await t.user("partner", http=http, partner=p1),
        "customer_all": await t.user("customer", http=http, customer=c1, groups=[customer_admins]),
        "customer_none": await t.user("customer", http=http, customer=c1),
    }
    partner = lambda p: {"account_type": "partner", "partner": p}  # noqa: E731
    customer = lambda c: {"account_type": "customer", "customer": c}  # noqa: E731
    tenant_of: dict[tuple[str, str], dict[str, Any]] = {}
    for role in ROLES:
        is_customer = role.startswith("customer")
        tenant_of[(role, "other_partner")] = partner(p2)
        # Another customer: a sibling under the same partner for customer users, another partner's for the rest.
        tenant_of[(role, "other_customer")] = customer(c1b if is_customer else c2)
        tenant_of[(role, "own_tenant")] = (
            {"account_type": "gooee"} if role == "gooee" else customer(c1) if is_customer else partner(p1)
        )
    return World(t, callers, tenant_of)


def expected(role: str, target: str, route: str, read: bool) -> tuple[int, str | None]:
    """(status, error code) the matrix expects."""
    if role == "gooee":
        return OK[route], None
    if target != "own_tenant":
        if route == "list":
            return 200, None
        if route == "create":
            return 400, "invalid_tenant"  # the tenant reads as unknown, exactly like a missing one
        return 404, "user_not_found"
    if role.endswith("_all") or read:
        return OK[route], None
    return 403, "permission_denied"


async def snapshot(server: Server, user_id: str) -> tuple[Any, ...]:
    """Everything the database holds about a user."""
    return (
        await fetch(server, "SELECT * FROM users WHERE id = ?", user_id),
        await fetch(server, "SELECT usergroup_id FROM users_user_groups WHERE users_id = ? ORDER BY 1", user_id),
        await fetch(server, "SELECT customer_id FROM users_customer_scopes WHERE users_id = ? ORDER BY 1", user_id),
        await fetch(server, "SELECT partner_id FROM users_partner_scopes WHERE users_id = ? ORDER BY 1", user_id),
        await fetch(server, "SELECT id, used_at FROM user_keys WHERE user_id = ? ORDER BY id", user_id),
        await fetch(server, "SELECT id, revoked_at FROM refresh_tokens WHERE user_id = ? ORDER BY id", user_id),
    )


def body_for(kind: Any, target: dict[str, Any], tenant: dict[str, Any]) -> Any:
    if kind == "put":
        return {"username": target["username"], "account_type": target["account_type"], "first_name": "Put"}
    if kind == "prefs":
        return PREFS
    if kind == "create":
        return {"username": email("made"), "first_name": "New", "last_name": "One", **tenant}
    return kind


@pytest.mark.timeout(600)
async def test_users_isolation_matrix(server: Server, http: aiohttp.ClientSession, admin: Api) -> None:
    world = await build_world(server, http, admin)
    shared: dict[tuple[str, str], dict[str, Any]] = {}
    cases = list(itertools.product(ROLES, TARGETS, ROUTES))
    failures = []
    for role, target, (route, method, path, body, read) in cases:
        tenant = world.tenant_of[(role, target)]
        want, code = expected(role, target, route, read)
        writes = not read and route != "prefs_get"
        if (want < 300 and writes) or (role, target) not in shared:
            victim = await world.tenants.new_user(
                tenant["account_type"], **{k: v for k, v in tenant.items() if k != "account_type"}
            )
            if not (want < 300 and writes):
                shared[(role, target)] = victim
        else:
            victim = shared[(role, target)]
        request_body = body_for(body, victim, tenant)
        before = await snapshot(server, victim["id"])
        status, answer = await world.callers[role].call(method, path.format(id=victim["id"]), request_body)
        where = f"{role} -> {target} {route}: {status} {answer}"
        if status != want or (code and (answer or {}).get("code") != code):
            failures.append(where)
            continue
        if route == "list":
            ids = {u["id"] for u in answer["results"]}
            assert (victim["id"] in ids) == (role == "gooee" or target == "own_tenant"), where
        if want >= 400 or not writes:
            assert await snapshot(server, victim["id"]) == before, f"changed: {where}"
        if route == "create" and want >= 400:
            made = await fetch(server, "SELECT id FROM users WHERE username = ?", request_body["username"])
            assert made == [], f"created: {where}"
        if route == "delete" and want == 204:
            assert await fetch(server, "SELECT id FROM users WHERE id = ?", victim["id"]) == [], where
    print(f"isolation matrix: {len(cases)} cases")
    assert not failures, "\n".join(failures)
    assert len(cases) == len(ROLES) * len(TARGETS) * len(ROUTES) == 165
