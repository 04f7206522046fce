"""Tenants and permissions over REST: /partners, /customers, /user_groups, the users' permissions, and
devices that follow their creator's tenant. Good and bad paths of every route; the isolation matrix is
tests/integration/test_tenants_isolation.py."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from handlers.tenancy import PERMISSIONS
from tests.support import PASSWORD, Api, Server, fetch, gatehouse

ALL = list(PERMISSIONS)
MISSING = "00000000-0000-4000-8000-000000000000"


def assert_error(status: int, body: Any, want_status: int, code: str, *mentions: str) -> None:
    assert status == want_status, body
    assert isinstance(body, dict) and set(body) == {"detail", "code", "errors"}, body
    assert body["code"] == code, body
    for word in mentions:
        assert word in body["detail"], body


async def execute(server: Server, sql: str, *args: Any) -> None:
    """Write straight to a server's database (`?` placeholders): what no route of this module does."""
    url = server.database_url
    if url.startswith("sqlite://"):
        conn = sqlite3.connect(url.removeprefix("sqlite://"), timeout=30)
        try:
            conn.execute(sql, args)
            conn.commit()
        finally:
            conn.close()
        return
    numbered = iter(range(1, sql.count("?") + 1))
    pg = await asyncpg.connect(url)
    try:
        await pg.execute(re.sub(r"\?", lambda _: f"${next(numbered)}", sql), *[uuid.UUID(a) for a in args])
    finally:
        await pg.close()


class Tenants:
    """Builds partners, customers, groups (as gooee, over REST) and their users (with the CLI)."""

    def __init__(self, server: Server, http: aiohttp.ClientSession, admin: Api) -> None:
        self.server, self.http, self.admin = server, http, admin

    async def partner(self, name: str = "Acme", **extra: Any) -> dict[str, Any]:
        status, body = await self.admin.call("POST", "/partners/", {"name": name, **extra})
        assert status == 201, body
        return body

    async def customer(self, partner: dict[str, Any], name: str = "Shop") -> dict[str, Any]:
        status, body = await self.admin.call("POST", "/customers/", {"name": name, "partner": partner["id"]})
        assert status == 201, body
        return body

    async def group(self, permissions: list[str], **tenant: str) -> dict[str, Any]:
        status, body = await self.admin.call(
            "POST", "/user_groups/", {"name": "g", "permissions": permissions, **tenant}
        )
        assert status == 201, body
        return body

    async def user(
        self,
        kind: str,
        tenant: dict[str, Any] | None = None,
        permissions: list[str] | None = None,
        *,
        login: bool = True,
    ) -> Api:
        """A new active user of `tenant` (a partner for kind="partner", a customer for "customer"),
        in one group of that tenant holding `permissions` (None: no group at all)."""
        username = f"{kind}-{uuid.uuid4().hex[:10]}@tenants.test"
        args = ["users", "create", "--username", username, "--account-type", kind, "--password-stdin"]
        if tenant is not None:
            args += [f"--{kind}", tenant["id"]]
        done = await asyncio.to_thread(
            gatehouse, *args, data_dir=self.server.data_dir, env=self.server.env, stdin=PASSWORD + "\n"
        )
        assert done.returncode == 0, done.stderr
        user_id = re.search(r"\(([0-9a-f-]{36})\)", done.stdout).group(1)  # type: ignore[union-attr]
        if permissions is not None:
            assert tenant is not None
            group = await self.group(permissions, **{kind: tenant["id"]})
            await join_group(self.server, user_id, group["id"])
        api = Api(self.http, self.server.url)
        api.id = user_id  # type: ignore[attr-defined]
        api.username = username  # type: ignore[attr-defined]
        if login:
            await api.login(username)
        return api


async def join_group(server: Server, user_id: str, group_id: str) -> None:
    await execute(server, "INSERT INTO users_user_groups (users_id, usergroup_id) VALUES (?, ?)", user_id, group_id)


async def add_scope(server: Server, user_id: str, kind: str, target_id: str) -> None:
    await execute(server, f"INSERT INTO users_{kind}_scopes (users_id, {kind}_id) VALUES (?, ?)", user_id, target_id)


@pytest.fixture
async def t(server: Server, http: aiohttp.ClientSession, admin: Api) -> Tenants:
    return Tenants(server, http, admin)


def ids(listing: dict[str, Any]) -> set[str]:
    return {r["id"] for r in listing["results"]}


# --- partners ----------------------------------------------------------------------------------


async def test_gooee_manages_partners(t: Tenants, admin: Api) -> None:
    status, made = await admin.call(
        "POST", "/partners/", {"name": "  Acme Lighting ", "is_gateway_lite_provider": True}
    )
    assert status == 201, made
    assert set(made) == {"id", "name", "created", "modified", "is_gateway_lite_provider"}
    assert made["name"] == "Acme Lighting" and made["is_gateway_lite_provider"] is True
    one = f"/partners/{made['id']}/"
    status, got = await admin.call("GET", one)
    assert status == 200 and got == made
    status, got = await admin.call("GET", one.rstrip("/"))  # the same route without the slash
    assert status == 200 and got == made
    status, patched = await admin.call("PATCH", one, {"name": "Acme"})
    assert status == 200 and patched["name"] == "Acme" and patched["is_gateway_lite_provider"] is True
    assert patched["modified"] >= made["modified"] and patched["created"] == made["created"]
    status, put = await admin.call("PUT", one, {"name": "Acme 2"})
    assert status == 200 and put["name"] == "Acme 2" and put["is_gateway_lite_provider"] is False  # replaced
    status, listing = await admin.call("GET", "/partners/")
    assert status == 200 and made["id"] in ids(listing) and listing["count"] >= len(listing["results"])
    status, _ = await admin.call("DELETE", one)
    assert status == 204
    status, body = await admin.call("GET", one)
    assert_error(status, body, 404, "partner_not_found")
    status, body = await admin.call("DELETE", one)
    assert_error(status, body, 404, "partner_not_found")


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "ok", "is_gateway_lite_provider": "maybe"}, "is_gateway_lite_provider"),
    ],
)
async def test_partner_field_errors(admin: Api, t: Tenants, body: dict[str, Any], field: str) -> None:
    status, answer = await admin.call("POST", "/partners/", body)
    assert_error(status, answer, 400, "invalid_schema")
    assert [e["field"] for e in answer["errors"]] == [field]
    partner = await t.partner()
    for method in ("PUT", "PATCH"):
        if method == "PATCH" and not body:
            continue
        status, answer = await admin.call(method, f"/partners/{partner['id']}/", body)
        assert_error(status, answer, 400, "invalid_schema")
    status, answer = await admin.call("PATCH", f"/partners/{partner['id']}/", {"name": None})
    assert_error(status, answer, 400, "invalid_schema")
    _, still = await admin.call("GET", f"/partners/{partner['id']}/")
    assert still == partner


async def test_partner_users_see_their_partner_and_scopes_and_change_nothing(t: Tenants, server: Server) -> None:
    mine, scoped, other = await t.partner("mine"), await t.partner("scoped"), await t.partner("other")
    user = await t.user("partner", mine, ALL, login=False)
    await add_scope(server, user.id, "partner", scoped["id"])  # type: ignore[attr-defined]
    await user.login(user.username)  # type: ignore[attr-defined]
    status, listing = await user.call("GET", "/partners/")
    assert status == 200 and ids(listing) == {mine["id"], scoped["id"]} and listing["count"] == 2
    for seen in (mine, scoped):
        status, got = await user.call("GET", f"/partners/{seen['id']}/")
        assert status == 200 and got == seen
    status, body = await user.call("GET", f"/partners/{other['id']}/")
    assert_error(status, body, 404, "partner_not_found")
    status, body = await user.call("POST", "/partners/", {"name": "mine too"})
    assert_error(status, body, 403, "permission_denied")
    for method, payload in (("PATCH", {"name": "x"}), ("PUT", {"name": "x"}), ("DELETE", None)):
        status, body = await user.call(method, f"/partners/{mine['id']}/", payload)
        assert_error(status, body, 403, "permission_denied")
        status, body = await user.call(method, f"/partners/{other['id']}/", payload)
        assert_error(status, body, 404, "partner_not_found")
    _, got = await t.admin.call("GET", f"/partners/{mine['id']}/")
    assert got == mine


async def test_deleting_a_partner_in_use_is_409_naming_what_remains(t: Tenants, admin: Api) -> None:
    partner = await t.partner()
    customer = await t.customer(partner)
    status, body = await admin.call("DELETE", f"/partners/{partner['id']}/")
    assert_error(status, body, 409, "partner_in_use", "1 customer(s)")
    user = await t.user("partner", partner, login=False)
    status, body = await admin.call("DELETE", f"/partners/{partner['id']}/")
    assert_error(status, body, 409, "partner_in_use", "1 customer(s)", "1 user(s)")
    assert "device" not in body["detail"]
    _, got = await admin.call("GET", f"/partners/{partner['id']}/")
    assert got == partner
    # Once its customer and its user are gone, it goes (its groups with it).
    await t.group([], partner=partner["id"])
    status, _ = await admin.call("DELETE", f"/customers/{customer['id']}/")
    assert status == 204
    await execute(t.server, "DELETE FROM users WHERE id = ?", user.id)  # type: ignore[attr-defined]
    status, _ = await admin.call("DELETE", f"/partners/{partner['id']}/")
    assert status == 204


async def test_partner_ids_that_are_not_uuids_are_404(admin: Api) -> None:
    for raw in ("1", "not-a-uuid", MISSING, "%20"):
        for method in ("GET", "DELETE"):
            status, body = await admin.call(method, f"/partners/{raw}/")
            assert_error(status, body, 404, "partner_not_found")
        status, body = await admin.call("PATCH", f"/customers/{raw}/", {"name": "x"})
        assert_error(status, body, 404, "customer_not_found")
        status, body = await admin.call("GET", f"/user_groups/{raw}")
        assert_error(status, body, 404, "user_group_not_found")


async def test_tenancy_routes_need_login(server: Server, http: aiohttp.ClientSession) -> None:
    anon = Api(http, server.url)
    for method, path in (
        ("GET", "/partners/"),
        ("POST", "/partners/"),
        ("GET", f"/partners/{MISSING}/"),
        ("GET", "/customers/"),
        ("DELETE", f"/customers/{MISSING}/"),
        ("GET", "/user_groups/"),
        ("PUT", f"/user_groups/{MISSING}/"),
        ("GET", f"/users/{MISSING}/permissions"),
        ("GET", "/me/permissions"),
    ):
        status, body = await anon.call(method, path, {"name": "x"} if method in ("POST", "PUT") else None)
        assert_error(status, body, 401, "missing_credentials")


async def test_lists_page_with_limit_and_offset(t: Tenants) -> None:
    partner = await t.partner()
    made = [await t.customer(partner, f"c{i}") for i in range(5)]
    user = await t.user("partner", partner, [])
    status, first = await user.call("GET", "/customers/?limit=2")
    assert status == 200 and first["count"] == 5 and [c["id"] for c in first["results"]] == [m["id"] for m in made[:2]]
    _, rest = await user.call("GET", "/customers/?limit=2&offset=2")
    assert rest["count"] == 5 and [c["id"] for c in rest["results"]] == [m["id"] for m in made[2:4]]
    _, tail = await user.call("GET", "/customers/?offset=4")
    assert [c["id"] for c in tail["results"]] == [made[4]["id"]]
    _, past = await user.call("GET", "/customers/?offset=10")
    assert past == {"count": 5, "results": []}
    for bad in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
        for route in ("/partners/", "/customers/", "/user_groups/"):
            status, body = await user.call("GET", f"{route}?{bad}")
            assert_error(status, body, 400, "invalid_schema")


# --- customers ---------------------------------------------------------------------------------


async def test_gooee_manages_customers(t: Tenants, admin: Api) -> None:
    partner, other = await t.partner(), await t.partner()
    status, made = await admin.call("POST", "/customers/", {"name": "Shop", "partner": partner["id"]})
    assert status == 201 and set(made) == {"id", "name", "partner", "created", "modified"}
    assert made["partner"] == partner["id"]
    one = f"/customers/{made['id']}/"
    status, got = await admin.call("GET", one)
    assert status == 200 and got == made
    status, moved = await admin.call("PATCH", one, {"partner": other["id"]})
    assert status == 200 and moved["partner"] == other["id"] and moved["name"] == "Shop"
    status, put = await admin.call("PUT", one, {"name": "Shop 2", "partner": partner["id"]})
    assert status == 200 and put["name"] == "Shop 2" and put["partner"] == partner["id"]
    status, listing = await admin.call("GET", "/customers/")
    assert made["id"] in ids(listing)
    status, body = await admin.call("POST", "/customers/", {"name": "Shop"})
    assert_error(status, body, 400, "invalid_schema", "partner")
    for bad in (MISSING, "nope"):
        status, body = await admin.call("POST", "/customers/", {"name": "Shop", "partner": bad})
        assert_error(status, body, 400, "invalid_reference", bad)
        assert body["errors"][0]["field"] == "partner"
        status, body = await admin.call("PATCH", one, {"partner": bad})
        assert_error(status, body, 400, "invalid_reference")
    status, body = await admin.call("PATCH", one, {"name": ""})
    assert_error(status, body, 400, "invalid_schema")
    status, _ = await admin.call("DELETE", one)
    assert status == 204
    status, body = await admin.call("GET", one)
    assert_error(status, body, 404, "customer_not_found")


async def test_partner_user_with_manage_customers_manages_their_partners(t: Tenants) -> None:
    partner, other = await t.partner(), await t.partner()
    foreign = await t.customer(other)
    user = await t.user("partner", partner, ["manage_customers"])
    status, made = await user.call("POST", "/customers/", {"name": "Mine"})
    assert status == 201 and made["partner"] == partner["id"]  # their own partner when left out
    status, made2 = await user.call("POST", "/customers/", {"name": "Mine 2", "partner": partner["id"]})
    assert status == 201
    # Another partner's id reads like a missing one.
    for ref in (other["id"], MISSING):
        status, body = await user.call("POST", "/customers/", {"name": "Theirs", "partner": ref})
        assert_error(status, body, 400, "invalid_reference")
        status, body = await user.call("PATCH", f"/customers/{made['id']}/", {"partner": ref})
        assert_error(status, body, 400, "invalid_reference")
    status, listing = await user.call("GET", "/customers/")
    assert ids(listing) == {made["id"], made2["id"]}
    status, patched = await user.call("PATCH", f"/customers/{made['id']}/", {"name": "Renamed"})
    assert status == 200 and patched["name"] == "Renamed"
    status, put = await user.call("PUT", f"/customers/{made['id']}/", {"name": "Put"})
    assert status == 200 and put["partner"] == partner["id"]
    for method, payload in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        status, body = await user.call(method, f"/customers/{foreign['id']}/", payload)
        assert_error(status, body, 404, "customer_not_found")
    status, _ = await user.call("DELETE", f"/customers/{made2['id']}/")
    assert status == 204
    rows = await fetch(t.server, "SELECT name FROM customers WHERE partner_id = ?", other["id"])
    assert [r[0] for r in rows] == ["Shop"]


async def test_customer_managers_need_the_permission_and_their_own_partner(t: Tenants, server: Server) -> None:
    partner, scoped = await t.partner(), await t.partner()
    own, theirs = await t.customer(partner), await t.customer(scoped)
    without = await t.user("partner", partner, ["manage_user_groups"])
    status, body = await without.call("POST", "/customers/", {"name": "x"})
    assert_error(status, body, 403, "permission_denied", "manage_customers")
    for method, payload in (("PATCH", {"name": "x"}), ("PUT", {"name": "x"}), ("DELETE", None)):
        status, body = await without.call(method, f"/customers/{own['id']}/", payload)
        assert_error(status, body, 403, "permission_denied")
    status, got = await without.call("GET", f"/customers/{own['id']}/")
    assert status == 200 and got == own
    # A scoped partner's customers are seen but not managed.
    manager = await t.user("partner", partner, ["manage_customers"], login=False)
    await add_scope(server, manager.id, "partner", scoped["id"])  # type: ignore[attr-defined]
    await manager.login(manager.username)  # type: ignore[attr-defined]
    status, got = await manager.call("GET", f"/customers/{theirs['id']}/")
    assert status == 200 and got == theirs
    status, body = await manager.call("PATCH", f"/customers/{theirs['id']}/", {"name": "x"})
    assert_error(status, body, 403, "permission_denied")
    status, body = await manager.call("POST", "/customers/", {"name": "x", "partner": scoped["id"]})
    assert_error(status, body, 403, "permission_denied")
    status, body = await manager.call("PATCH", f"/customers/{own['id']}/", {"partner": scoped["id"]})
    assert_error(status, body, 403, "permission_denied")
    _, still = await t.admin.call("GET", f"/customers/{own['id']}/")
    assert still == own


async def test_customer_users_see_their_customer_and_scopes(t: Tenants, server: Server) -> None:
    partner = await t.partner()
    mine, scoped, sibling = await t.customer(partner), await t.customer(partner), await t.customer(partner)
    user = await t.user("customer", mine, ALL, login=False)
    await add_scope(server, user.id, "customer", scoped["id"])  # type: ignore[attr-defined]
    await user.login(user.username)  # type: ignore[attr-defined]
    status, listing = await user.call("GET", "/customers/")
    assert status == 200 and ids(listing) == {mine["id"], scoped["id"]}
    status, body = await user.call("GET", f"/customers/{sibling['id']}/")
    assert_error(status, body, 404, "customer_not_found")
    status, body = await user.call("GET", f"/partners/{partner['id']}/")
    assert_error(status, body, 404, "partner_not_found")
    status, body = await user.call("POST", "/customers/", {"name": "x", "partner": partner["id"]})
    assert_error(status, body, 403, "permission_denied")
    status, body = await user.call("PATCH", f"/customers/{mine['id']}/", {"name": "x"})
    assert_error(status, body, 403, "permission_denied")


async def test_deleting_a_customer_with_users_or_devices_is_409(t: Tenants, admin: Api) -> None:
    partner = await t.partner()
    customer = await t.customer(partner)
    user = await t.user("customer", customer, ["add_device"])
    device = await user.new_device("shop meter")
    status, body = await admin.call("DELETE", f"/customers/{customer['id']}/")
    assert_error(status, body, 409, "customer_in_use", "1 user(s)", "1 device(s)")
    status, body = await admin.call("DELETE", f"/partners/{partner['id']}/")
    assert_error(status, body, 409, "partner_in_use", "1 customer(s)")
    status, _ = await admin.call("DELETE", f"/gateway/devices/{device['id']}")
    assert status == 204
    status, body = await admin.call("DELETE", f"/customers/{customer['id']}/")
    assert_error(status, body, 409, "customer_in_use", "1 user(s)")
    assert "device" not in body["detail"]


# --- user groups -------------------------------------------------------------------------------


async def test_gooee_manages_user_groups(t: Tenants, admin: Api) -> None:
    partner = await t.partner()
    customer = await t.customer(partner)
    body = {"name": "Ops", "permissions": ["delete_device", "add_device", "add_device"], "partner": partner["id"]}
    status, made = await admin.call("POST", "/user_groups/", body)
    assert status == 201, made
    assert set(made) == {"id", "name", "permissions", "partner", "customer", "created", "modified"}
    assert made["permissions"] == ["add_device", "delete_device"] and made["customer"] is None
    one = f"/user_groups/{made['id']}/"
    status, got = await admin.call("GET", one)
    assert status == 200 and got == made
    status, patched = await admin.call("PATCH", one, {"permissions": ["manage_customers"]})
    assert status == 200 and patched["permissions"] == ["manage_customers"] and patched["partner"] == partner["id"]
    status, put = await admin.call("PUT", one, {"name": "Shop", "customer": customer["id"]})
    assert status == 200 and put["permissions"] == [] and put["partner"] is None and put["customer"] == customer["id"]
    status, gooee = await admin.call("POST", "/user_groups/", {"name": "Staff", "permissions": ALL})
    assert status == 201 and gooee["partner"] is None and gooee["customer"] is None and gooee["permissions"] == ALL
    status, listing = await admin.call("GET", "/user_groups/")
    assert {made["id"], gooee["id"]} <= ids(listing)
    status, _ = await admin.call("DELETE", one)
    assert status == 204
    status, body = await admin.call("GET", one)
    assert_error(status, body, 404, "user_group_not_found")


@pytest.mark.parametrize(
    "body, code, words",
    [
        ({"name": "x", "permissions": ["add_device", "fly_to_moon"]}, "invalid_schema", ["fly_to_moon"]),
        ({"name": "x", "permissions": ["ADD_DEVICE"]}, "invalid_schema", ["ADD_DEVICE"]),
        ({"name": "x", "permissions": "add_device"}, "invalid_schema", ["permissions"]),
        ({"permissions": []}, "invalid_schema", ["name"]),
        ({"name": "x", "partner": MISSING}, "invalid_reference", ["partner", MISSING]),
        ({"name": "x", "customer": "bogus"}, "invalid_reference", ["customer", "bogus"]),
    ],
)
async def test_user_group_field_errors(admin: Api, body: dict[str, Any], code: str, words: list[str]) -> None:
    status, answer = await admin.call("POST", "/user_groups/", body)
    assert_error(status, answer, 400, code, *words)


async def test_a_group_has_one_tenant_at_most(t: Tenants, admin: Api) -> None:
    partner = await t.partner()
    customer = await t.customer(partner)
    status, body = await admin.call(
        "POST", "/user_groups/", {"name": "x", "partner": partner["id"], "customer": customer["id"]}
    )
    assert_error(status, body, 400, "invalid_schema", "only one")


async def test_tenant_users_manage_their_own_tenants_groups(t: Tenants) -> None:
    partner, other = await t.partner(), await t.partner()
    customer = await t.customer(partner)
    manager = await t.user("partner", partner, ["manage_user_groups", "add_device", "change_device"])
    status, made = await manager.call("POST", "/user_groups/", {"name": "Installers", "permissions": ["add_device"]})
    assert status == 201 and made["partner"] == partner["id"] and made["customer"] is None
    # Permissions they do not hold: 403 naming them; nothing made.
    status, body = await manager.call("POST", "/user_groups/", {"name": "x", "permissions": ["delete_device"]})
    assert_error(status, body, 403, "permission_denied", "delete_device")
    status, body = await manager.call("PATCH", f"/user_groups/{made['id']}/", {"permissions": ["delete_rule"]})
    assert_error(status, body, 403, "permission_denied", "delete_rule")
    status, patched = await manager.call("PATCH", f"/user_groups/{made['id']}/", {"permissions": ["change_device"]})
    assert status == 200 and patched["permissions"] == ["change_device"]
    # Another partner's (or a missing) partner or customer: 400 alike; their customer's group: seen, not managed.
    for field, ref in (("partner", other["id"]), ("partner", MISSING), ("customer", MISSING)):
        status, body = await manager.call("POST", "/user_groups/", {"name": "x", field: ref})
        assert_error(status, body, 400, "invalid_reference", field)
    status, body = await manager.call("POST", "/user_groups/", {"name": "x", "customer": customer["id"]})
    assert_error(status, body, 403, "permission_denied")
    customers_group = await t.group(["add_device"], customer=customer["id"])
    status, got = await manager.call("GET", f"/user_groups/{customers_group['id']}/")
    assert status == 200 and got == customers_group
    status, body = await manager.call("DELETE", f"/user_groups/{customers_group['id']}/")
    assert_error(status, body, 403, "permission_denied")
    others_group = await t.group([], partner=other["id"])
    gooee_group = await t.group([])
    for group in (others_group, gooee_group):
        status, body = await manager.call("GET", f"/user_groups/{group['id']}/")
        assert_error(status, body, 404, "user_group_not_found")
    status, listing = await manager.call("GET", "/user_groups/")
    assert made["id"] in ids(listing) and customers_group["id"] in ids(listing)
    assert not {others_group["id"], gooee_group["id"]} & ids(listing)
    status, _ = await manager.call("DELETE", f"/user_groups/{made['id']}/")
    assert status == 204
    # A customer user's group is their customer's.
    shop = await t.user("customer", customer, ["manage_user_groups"])
    status, theirs = await shop.call("POST", "/user_groups/", {"name": "Staff"})
    assert status == 201 and theirs["customer"] == customer["id"] and theirs["partner"] is None
    status, body = await shop.call("POST", "/user_groups/", {"name": "Staff", "permissions": ["add_device"]})
    assert_error(status, body, 403, "permission_denied", "add_device")


async def test_managing_groups_needs_the_permission(t: Tenants) -> None:
    partner = await t.partner()
    group = await t.group([], partner=partner["id"])
    user = await t.user("partner", partner, ALL[:-1])  # everything but manage_user_groups
    assert "manage_user_groups" not in ALL[:-1]
    status, body = await user.call("POST", "/user_groups/", {"name": "x"})
    assert_error(status, body, 403, "permission_denied", "manage_user_groups")
    for method, payload in (("PATCH", {"name": "x"}), ("PUT", {"name": "x"}), ("DELETE", None)):
        status, body = await user.call(method, f"/user_groups/{group['id']}/", payload)
        assert_error(status, body, 403, "permission_denied")
    status, got = await user.call("GET", f"/user_groups/{group['id']}/")
    assert status == 200 and got == group


# --- permissions -------------------------------------------------------------------------------


async def test_permissions_are_the_union_of_the_groups(t: Tenants, server: Server, admin: Api) -> None:
    status, mine = await admin.call("GET", "/me/permissions")
    assert status == 200 and mine == ALL
    partner = await t.partner()
    customer = await t.customer(partner)
    user = await t.user("partner", partner, ["delete_rule", "add_device"], login=False)
    second = await t.group(["add_device", "add_action"], partner=partner["id"])
    await join_group(server, user.id, second["id"])  # type: ignore[attr-defined]
    await user.login(user.username)  # type: ignore[attr-defined]
    want = ["add_action", "add_device", "delete_rule"]
    status, got = await user.call("GET", "/me/permissions")
    assert status == 200 and got == want
    status, got = await admin.call("GET", f"/users/{user.id}/permissions")  # type: ignore[attr-defined]
    assert status == 200 and got == want
    status, got = await user.call("GET", f"/users/{user.id}/permissions/")  # type: ignore[attr-defined]
    assert status == 200 and got == want
    none = await t.user("customer", customer)
    status, got = await none.call("GET", "/me/permissions")
    assert status == 200 and got == []
    # The partner user sees their customer's users; the customer user does not see the partner's.
    status, got = await user.call("GET", f"/users/{none.id}/permissions")  # type: ignore[attr-defined]
    assert status == 200 and got == []
    _, gooee = await admin.call("GET", "/me")
    for who, target_id in ((none, user.id), (user, gooee["id"])):  # type: ignore[attr-defined]
        status, body = await who.call("GET", f"/users/{target_id}/permissions")
        assert_error(status, body, 404, "user_not_found")
    for bad in (MISSING, "nope", "1"):
        status, body = await admin.call("GET", f"/users/{bad}/permissions")
        assert_error(status, body, 404, "user_not_found")


async def test_changing_a_group_applies_at_once(t: Tenants, server: Server, admin: Api) -> None:
    partner = await t.partner()
    user = await t.user("partner", partner, [], login=False)
    rows = await fetch(server, "SELECT usergroup_id FROM users_user_groups WHERE users_id = ?", user.id)  # type: ignore[attr-defined]
    group_id = rows[0][0]
    await user.login(user.username)  # type: ignore[attr-defined]
    status, body = await user.call("POST", "/gateway/devices", {"name": "x"})
    assert_error(status, body, 403, "permission_denied", "add_device")
    status, _ = await admin.call("PATCH", f"/user_groups/{group_id}/", {"permissions": ["add_device"]})
    assert status == 200
    status, _ = await user.call("POST", "/gateway/devices", {"name": "x"})  # no cached principal in the way
    assert status == 201
    status, _ = await admin.call("DELETE", f"/user_groups/{group_id}/")
    assert status == 204
    status, body = await user.call("POST", "/gateway/devices", {"name": "x"})
    assert_error(status, body, 403, "permission_denied")


# --- devices by tenant -------------------------------------------------------------------------


async def test_devices_follow_their_creators_tenant(t: Tenants, server: Server) -> None:
    partner, other = await t.partner(), await t.partner()
    shop, sibling = await t.customer(partner), await t.customer(partner)
    installer = await t.user("partner", partner, ["add_device", "change_device"])
    colleague = await t.user("partner", partner, [])
    boss = await t.user("partner", partner, ["delete_device"])
    shop_user = await t.user("customer", shop, ["add_device"])
    sibling_user = await t.user("customer", sibling, ALL)
    stranger = await t.user("partner", other, ALL)
    device = await installer.new_device("partner meter")
    shop_device = await shop_user.new_device("shop meter")
    rows = await fetch(server, "SELECT tenant_partner_id, tenant_customer_id FROM devices WHERE id = ?", device["id"])
    assert [tuple(str(v) if v else None for v in r) for r in rows] == [(partner["id"], None)]
    rows = await fetch(
        server, "SELECT tenant_partner_id, tenant_customer_id FROM devices WHERE id = ?", shop_device["id"]
    )
    assert [tuple(str(v) if v else None for v in r) for r in rows] == [(None, shop["id"])]
    # The partner's users see both (the shop is their customer); the shop sees its own; others nothing.
    for who, want in (
        (colleague, {device["id"], shop_device["id"]}),
        (shop_user, {shop_device["id"]}),
        (sibling_user, set()),
        (stranger, set()),
    ):
        _, listing = await who.call("GET", "/gateway/devices")
        assert {d["id"] for d in listing["results"]} == want
    for who in (sibling_user, stranger):
        status, body = await who.call("GET", f"/gateway/devices/{shop_device['id']}")
        assert_error(status, body, 404, "device_not_found")
    status, _ = await colleague.call("GET", f"/gateway/devices/{device['id']}/telemetry")
    assert status == 200
    # Inside the view, changing needs change_device and deleting someone else's device delete_device.
    base = f"/gateway/devices/{device['id']}"
    for method, path, payload in (
        ("POST", "/provision", {}),
        ("POST", "/commands", {"command": {"m": 1}}),
        ("DELETE", "", None),
    ):
        status, body = await colleague.call(method, base + path, payload)
        assert_error(status, body, 403, "permission_denied")
    status, body = await colleague.call("POST", "/gateway/devices", {"name": "x"})
    assert_error(status, body, 403, "permission_denied", "add_device")
    status, _ = await installer.call("POST", base + "/provision", {})
    assert status == 201
    status, sent = await installer.call("POST", base + "/commands", {"command": {"m": 1}})
    assert status == 202 and sent["status"] == "pending"
    status, body = await installer.call("DELETE", f"/gateway/devices/{shop_device['id']}")
    assert_error(status, body, 403, "permission_denied", "delete_device")
    status, _ = await boss.call("DELETE", f"/gateway/devices/{shop_device['id']}")
    assert status == 204
    status, _ = await installer.call("DELETE", base)  # their own: no delete_device needed
    assert status == 204


async def test_tenantless_users_keep_their_own_devices(alice: Api, bob: Api) -> None:
    device = await alice.new_device("alice's")
    status, _ = await alice.call("POST", f"/gateway/devices/{device['id']}/provision", {})
    assert status == 201
    status, body = await bob.call("GET", f"/gateway/devices/{device['id']}")
    assert_error(status, body, 404, "device_not_found")
    status, perms = await alice.call("GET", "/me/permissions")
    assert status == 200 and perms == []
    status, _ = await alice.call("DELETE", f"/gateway/devices/{device['id']}")
    assert status == 204


# --- the CLI -----------------------------------------------------------------------------------


async def test_cli_creates_partners_and_tenant_users(server: Server, t: Tenants) -> None:
    def run(*args: str) -> Any:
        return gatehouse(*args, data_dir=server.data_dir, env=server.env, stdin=PASSWORD + "\n")

    done = await asyncio.to_thread(run, "partners", "create", "--name", "CLI Partner", "--gateway-lite-provider")
    assert done.returncode == 0, done.stderr
    partner_id = done.stdout.strip()
    status, got = await t.admin.call("GET", f"/partners/{partner_id}/")
    assert status == 200 and got["name"] == "CLI Partner" and got["is_gateway_lite_provider"] is True
    customer = await t.customer(got)
    for args, words in (
        (["--account-type", "partner"], "needs a partner"),
        (["--account-type", "partner", "--partner", MISSING], "not found"),
        (["--account-type", "partner", "--partner", "nope"], "not found"),
        (["--account-type", "customer", "--partner", partner_id], "only a partner user"),
        (["--account-type", "partner", "--customer", customer["id"]], "needs a partner"),
        (["--account-type", "gooee", "--customer", customer["id"]], "only a customer user"),
        (["--account-type", "gooee", "--partner", partner_id], "only a partner user"),
        (["--account-type", "customer", "--customer", MISSING], "not found"),
    ):
        username = f"cli-{uuid.uuid4().hex[:8]}@tenants.test"
        done = await asyncio.to_thread(run, "users", "create", "--username", username, "--password-stdin", *args)
        assert done.returncode == 1 and words in done.stderr, (args, done.stderr)
        assert not await fetch(server, "SELECT id FROM users WHERE username = ?", username)
    done = await asyncio.to_thread(run, "partners", "create", "--name", " ")
    assert done.returncode == 1 and "--name" in done.stderr
    username = f"cli-{uuid.uuid4().hex[:8]}@tenants.test"
    args = ["users", "create", "--username", username, "--password-stdin", "--account-type", "customer"]
    done = await asyncio.to_thread(run, *args, "--customer", customer["id"])
    assert done.returncode == 0, done.stderr
    rows = await fetch(server, "SELECT customer_id, partner_id FROM users WHERE username = ?", username)
    assert [(str(r[0]), r[1]) for r in rows] == [(customer["id"], None)]
