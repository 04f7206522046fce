"""The users resource on the real server (spec/users.rst): create, list, read, update, delete,
activate, deactivate, the username change request, /me, preferences, avatars."""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any

import aiohttp
import pytest
from PIL import Image

from handlers.avatars import MAX_BYTES, decode_avatar
from handlers.errors import InvalidPayload
from handlers.user_keys import _digest
from tests.smtp import SmtpSink
from tests.support import PASSWORD, Api, Server, fetch
from tests.tenants import Tenants, email

VIEW_KEYS = {
    "id", "created", "modified", "username", "account_type", "first_name", "last_name", "last_login",
    "account_status", "account_status_updated", "user_groups", "partner", "customer", "buildings", "phone_number",
    "avatar", "tags", "customer_scopes", "partner_scopes", "is_api_user",
}  # fmt: skip
DEFAULT_PREFS = {"date_format": "YYYY-MM-DD", "number_format": "en_US", "timezone": "UTC", "use_24": False,
                 "use_local": True}  # fmt: skip
NOBODY = "00000000-0000-4000-8000-000000000000"


def image(fmt: str, size: tuple[int, int] = (4, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, format=fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(status: int, body: Any, want: int, code: str | None = None, field: str | None = None) -> None:
    assert status == want, body
    assert isinstance(body, dict) and set(body) == {"detail", "code", "errors"}, body
    if code:
        assert body["code"] == code, body
    if field:
        assert field in {e.get("field") for e in body["errors"]}, body


@pytest.fixture
async def tenants(server: Server, admin: Api) -> Tenants:
    return Tenants(server, admin)


async def users_named(server: Server, username: str) -> list[tuple[Any, ...]]:
    rows = await fetch(server, "SELECT id, account_status FROM users WHERE username = ?", username)
    return [(str(uid), status) for uid, status in rows]  # PostgreSQL answers a uuid.UUID


# --- the view, /me ------------------------------------------------------------------------------


async def test_me_is_the_spec_view(alice: Api) -> None:
    status, me = await alice.call("GET", "/me")
    assert status == 200 and set(me) == VIEW_KEYS
    assert me["username"] == "alice@example.com" and me["account_type"] == "customer"
    assert me["buildings"] == [] and me["phone_number"] is None and me["avatar"] is None and me["tags"] == []
    assert me["user_groups"] == [] and me["partner"] is None and me["is_api_user"] is False
    status, same = await alice.call("GET", f"/users/{me['id']}/")
    assert status == 200 and same == me
    status, body = await alice.call("GET", "/me", auth=False)
    assert_error(status, body, 401)


async def test_me_patch_and_put(server: Server, http: aiohttp.ClientSession, tenants: Tenants) -> None:
    p = await tenants.partner()
    me = await tenants.user("partner", http=http, partner=p)
    status, view = await me.call(
        "PATCH", "/me", {"first_name": "Test", "last_name": "User", "phone_number": "+1(123)456-7891",
                         "avatar": None, "tags": ["ops", "ops", "night"]},
    )  # fmt: skip
    assert status == 200, view
    assert view["phone_number"] == "+1(123)456-7891" and view["tags"] == ["ops", "night"]
    # Read-only fields: a change is 403 naming the field; the current value passes.
    changes = {
        "account_type": "gooee", "is_api_user": True, "buildings": [NOBODY], "username": email("new"),
        "partner": None, "customer": NOBODY, "customer_scopes": [NOBODY], "partner_scopes": [NOBODY],
        "user_groups": [NOBODY],
    }  # fmt: skip
    for name, value in changes.items():
        status, body = await me.call("PATCH", "/me", {name: value, "first_name": "Sneaky"})
        if name == "buildings":
            assert_error(status, body, 400, "invalid_schema", "buildings")  # no buildings exist: always []
        else:
            assert_error(status, body, 403, "read_only_field", name)
        status, body = await me.call("PUT", "/me", {**_put_me(view), name: value, "first_name": "Sneaky"})
        if name == "buildings":
            assert_error(status, body, 400, "invalid_schema", "buildings")
        else:
            assert_error(status, body, 403, "read_only_field", name)
    current = {k: view[k] for k in ("account_type", "is_api_user", "username", "partner", "customer", "user_groups")}
    status, same = await me.call("PATCH", "/me", {**current, "last_name": "Userson"})
    assert status == 200 and same["last_name"] == "Userson", same
    assert (await fetch(server, "SELECT first_name FROM users WHERE id = ?", me.id)) == [("Test",)]  # type: ignore[attr-defined]
    # PUT needs every writable field.
    status, body = await me.call("PUT", "/me", {"first_name": "Only"})
    assert_error(status, body, 400, "invalid_schema", "last_name")
    status, put = await me.call(
        "PUT",
        "/me",
        {
            "first_name": "P",
            "last_name": "Q",
            "phone_number": None,
            "avatar": f"data:image/png;base64,{b64(image('PNG'))}",
            "tags": [],
        },
    )
    assert status == 200 and put["first_name"] == "P" and put["phone_number"] is None
    assert put["avatar"] == f"data:image/png;base64,{b64(image('PNG'))}"
    # Same validation as /users/.
    for body_, field in (({"first_name": "x" * 31}, "first_name"), ({"phone_number": "1" * 21}, "phone_number"),
                         ({"tags": ["t" * 51]}, "tags.0"), ({"avatar": "bm90IGFuIGltYWdl"}, "avatar"),
                         ({"surname": "x"}, "surname")):  # fmt: skip
        status, body = await me.call("PATCH", "/me", body_)
        assert_error(status, body, 400, field=field)


def _put_me(view: dict[str, Any]) -> dict[str, Any]:
    return {k: view[k] for k in ("first_name", "last_name", "phone_number", "avatar", "tags")}


# --- create --------------------------------------------------------------------------------------


async def test_create_invites_a_pending_user(server: Server, admin: Api, tenants: Tenants) -> None:
    p = await tenants.partner()
    c = await tenants.customer(p)
    g = await tenants.group(["add_device"], customer=c)
    username = email("new")
    status, view = await admin.call(
        "POST", "/users/?portal=true",
        {"username": username, "account_type": "customer", "customer": c, "first_name": "Bob", "last_name": "Bobsen",
         "phone_number": "18005467", "user_groups": [g], "tags": ["a", "b"], "is_api_user": True},
    )  # fmt: skip
    assert status == 201, view
    assert set(view) == VIEW_KEYS and view["account_status"] == "pending" and view["account_status_updated"]
    assert view["customer"] == c and view["partner"] is None and view["user_groups"] == [g]
    assert view["is_api_user"] is True and view["tags"] == ["a", "b"]
    mails = await fetch(server, "SELECT subject, body FROM outbox WHERE recipient = ?", username)
    assert len(mails) == 1 and "/#/user-registration/" in mails[0][1], mails
    keys = await fetch(server, "SELECT purpose FROM user_keys WHERE user_id = ?", view["id"])
    assert keys == [("activation",)]
    # Pending and without a password: no login.
    status, body = await admin.call("POST", "/auth/login", {"username": username, "password": PASSWORD}, auth=False)
    assert status == 401, body


async def test_create_with_password_checks_the_rules(admin: Api) -> None:
    username = email("pw")
    status, body = await admin.call("POST", "/users/", {"username": username, "account_type": "gooee",
                                                        "password": "short"})  # fmt: skip
    assert_error(status, body, 400, "weak_password")
    status, view = await admin.call(
        "POST",
        "/users/",
        {"username": username, "account_type": "gooee", "password": PASSWORD, "first_name": "A", "last_name": "B"},
    )
    assert status == 201
    status, _ = await admin.call("POST", f"/users/{view['id']}/activate/")
    assert status == 200
    status, _ = await admin.call("POST", "/auth/login", {"username": username, "password": PASSWORD}, auth=False)
    assert status == 200


async def test_create_constraints_each_name_their_field(server: Server, admin: Api, tenants: Tenants) -> None:
    p, p2 = await tenants.partner(), await tenants.partner()
    c = await tenants.customer(p)
    groups = [await tenants.group([], customer=c) for _ in range(6)]
    foreign_group = await tenants.group([], partner=p2)
    partner_group = await tenants.group([], partner=p)
    cases = [
        ({"account_type": "customer"}, 400, "customer"),
        ({"account_type": "partner"}, 400, "partner"),
        ({"account_type": "partner", "partner": p, "customer": c}, 400, "customer"),
        ({"account_type": "customer", "customer": c, "partner": p}, 400, "customer"),
        ({"account_type": "gooee", "partner": p}, 400, "partner"),
        ({"account_type": "gooee", "customer": c}, 400, "customer"),
        ({"account_type": "customer", "customer": NOBODY}, 400, "customer"),
        ({"account_type": "partner", "partner": NOBODY}, 400, "partner"),
        ({"account_type": "customer", "customer": c, "user_groups": groups}, 400, "user_groups"),
        ({"account_type": "customer", "customer": c, "user_groups": [foreign_group]}, 400, "user_groups"),
        ({"account_type": "customer", "customer": c, "user_groups": [partner_group]}, 400, "user_groups"),
        ({"account_type": "customer", "customer": c, "user_groups": [NOBODY]}, 400, "user_groups"),
        ({"account_type": "gooee", "first_name": "x" * 31}, 400, "first_name"),
        ({"account_type": "gooee", "last_name": "x" * 31}, 400, "last_name"),
        ({"account_type": "gooee", "phone_number": "1" * 21}, 400, "phone_number"),
        ({"account_type": "gooee", "tags": ["ok", "t" * 51]}, 400, "tags.1"),
        ({"account_type": "gooee", "buildings": [NOBODY]}, 400, "buildings"),
        ({"account_type": "gooee", "avatar": "!!!"}, 400, "avatar"),
        ({"account_type": "admin"}, 400, "account_type"),
        ({"account_type": "gooee", "username": "not-an-email"}, 400, "username"),
        ({"account_type": "gooee", "account_status": "active"}, 400, "account_status"),
        ({"account_type": "gooee", "partner_scopes": [NOBODY]}, 400, "partner_scopes"),
    ]
    for extra, want, field in cases:
        username = extra.pop("username", None) or email("bad")
        status, body = await admin.call("POST", "/users/", {"username": username, **extra})
        assert_error(status, body, want, field=field)
        assert await users_named(server, username) == [], (extra, "half-written")
    status, body = await admin.call("POST", "/users/", {"account_type": "gooee"})
    assert_error(status, body, 400, "invalid_schema", "username")
    # Five groups are fine.
    status, view = await admin.call("POST", "/users/", {"username": email("five"), "account_type": "customer",
                                                        "customer": c, "user_groups": groups[:5]})  # fmt: skip
    assert status == 201 and sorted(view["user_groups"]) == sorted(groups[:5])


async def test_duplicate_username_is_409(server: Server, admin: Api) -> None:
    status, body = await admin.call("POST", "/users/", {"username": "alice@example.com", "account_type": "gooee"})
    assert_error(status, body, 409, "duplicate_username", "username")
    assert len(await users_named(server, "alice@example.com")) == 1


async def test_who_may_create(server: Server, http: aiohttp.ClientSession, tenants: Tenants) -> None:
    p, p2 = await tenants.partner(), await tenants.partner()
    c, c2 = await tenants.customer(p), await tenants.customer(p2)
    only_customers = await tenants.group(["manage_customer_users"], partner=p)
    only_partners = await tenants.group(["manage_partner_users"], partner=p)
    cust_admin_group = await tenants.group(["manage_customer_users"], customer=c)
    partner_c = await tenants.user("partner", http=http, partner=p, groups=[only_customers])
    partner_p = await tenants.user("partner", http=http, partner=p, groups=[only_partners])
    cust_admin = await tenants.user("customer", http=http, customer=c, groups=[cust_admin_group])
    plain = await tenants.user("customer", http=http, customer=c)

    async def create(api: Api, **tenant: Any) -> tuple[int, Any]:
        return await api.call("POST", "/users/", {"username": email("by"), **tenant})

    customer_of_p = {"account_type": "customer", "customer": c}
    partner_of_p = {"account_type": "partner", "partner": p}
    assert (await create(partner_c, **customer_of_p))[0] == 201
    assert_error(*await create(partner_c, **partner_of_p), 403, "permission_denied")
    assert (await create(partner_p, **partner_of_p))[0] == 201
    assert_error(*await create(partner_p, **customer_of_p), 403, "permission_denied")
    assert (await create(cust_admin, **customer_of_p))[0] == 201
    assert_error(*await create(cust_admin, **partner_of_p), 400, "invalid_tenant", "partner")  # not in view
    assert_error(*await create(plain, **customer_of_p), 403, "permission_denied")
    for api in (partner_c, partner_p, cust_admin, plain):
        assert_error(*await create(api, account_type="gooee"), 403, "permission_denied")
        assert_error(*await create(api, account_type="customer", customer=c2), 400, "invalid_tenant", "customer")
    # A group of the user's tenant the caller cannot see is as unknown as a missing one.
    status, body = await cust_admin.call("POST", "/users/", {"username": email("g"), **customer_of_p,
                                                             "user_groups": [only_customers]})  # fmt: skip
    assert_error(status, body, 400, "invalid_user_group", "user_groups")


# --- list ----------------------------------------------------------------------------------------


async def test_list_filters_and_pages(http: aiohttp.ClientSession, tenants: Tenants) -> None:
    p = await tenants.partner()
    c = await tenants.customer(p)
    group = await tenants.group(["manage_customer_users"], customer=c)
    viewer = await tenants.user("customer", http=http, customer=c, groups=[group])
    made = [
        await tenants.new_user("customer", customer=c, first_name="Zed", tags=["red", "blue"]),
        await tenants.new_user("customer", customer=c, last_name="Quokka", tags=["red"]),
        await tenants.new_user("customer", customer=c, tags=["blue"]),
    ]
    elsewhere = await tenants.new_user("customer", customer=await tenants.customer(p), tags=["red"])
    status, page = await viewer.call("GET", "/users/")
    assert status == 200 and set(page) == {"count", "results"}
    ids = [u["id"] for u in page["results"]]
    assert ids == [viewer.id, *[m["id"] for m in made]] and page["count"] == 4  # type: ignore[attr-defined]
    assert elsewhere["id"] not in ids and all(set(u) == VIEW_KEYS for u in page["results"])

    async def ids_for(query: str) -> list[str]:
        status, got = await viewer.call("GET", f"/users/?{query}")
        assert status == 200, got
        return [u["id"] for u in got["results"]]

    assert await ids_for("tags=red") == [made[0]["id"], made[1]["id"]]
    assert await ids_for("tags=red,blue") == [made[0]["id"]]  # all of them
    assert await ids_for("search=zED") == [made[0]["id"]]
    assert await ids_for("search=quok") == [made[1]["id"]]
    assert await ids_for(f"search={made[2]['username'].upper()}") == [made[2]["id"]]
    assert await ids_for("account_status=pending") == [m["id"] for m in made]
    assert await ids_for("account_status=active") == [viewer.id]  # type: ignore[attr-defined]
    assert await ids_for("account_type=partner") == []
    status, second = await viewer.call("GET", "/users/?limit=2&offset=2")
    assert [u["id"] for u in second["results"]] == [made[1]["id"], made[2]["id"]] and second["count"] == 4
    for bad, field in (("limit=0", "limit"), ("account_type=admin", "account_type"), ("offset=-1", "offset")):
        status, body = await viewer.call("GET", f"/users/?{bad}")
        assert_error(status, body, 400, "invalid_schema", field)


# --- read, update, delete ------------------------------------------------------------------------


async def test_unknown_malformed_and_foreign_ids_are_404(alice: Api, bob: Api) -> None:
    _, bobs = await bob.call("GET", "/me")
    for path in ("/users/{}/", "/users/{}", "/users/{}/preferences", "/users/{}/activate/"):
        for uid in (NOBODY, "not-a-uuid", "1", bobs["id"]):
            method = "POST" if "activate" in path else "GET"
            status, body = await alice.call(method, path.format(uid))
            assert_error(status, body, 404, "user_not_found")


async def test_put_and_patch(server: Server, admin: Api, tenants: Tenants) -> None:
    p = await tenants.partner()
    c = await tenants.customer(p)
    view = await tenants.new_user("customer", customer=c)
    path = f"/users/{view['id']}/"
    status, body = await admin.call("PUT", path, {"first_name": "NoUsername"})
    assert_error(status, body, 400, "invalid_schema", "username")
    status, put = await admin.call("PUT", path, {"username": view["username"], "account_type": "customer",
                                                 "first_name": "Put", "tags": ["x"]})  # fmt: skip
    assert (
        status == 200 and put["first_name"] == "Put" and put["last_name"] == view["last_name"] and put["tags"] == ["x"]
    )
    status, patched = await admin.call("PATCH", path, {"phone_number": "555"})
    assert status == 200 and patched["phone_number"] == "555" and patched["first_name"] == "Put"
    # Changing the type re-checks the constraints.
    status, body = await admin.call("PATCH", path, {"account_type": "partner"})
    assert_error(status, body, 400, "invalid_tenant", "partner")
    status, body = await admin.call("PATCH", path, {"account_type": "partner", "partner": p})
    assert_error(status, body, 400, "invalid_tenant", "customer")
    status, moved = await admin.call("PATCH", path, {"account_type": "partner", "partner": p, "customer": None})
    assert status == 200 and moved["partner"] == p and moved["customer"] is None
    group = await tenants.group([], customer=c)
    status, body = await admin.call("PATCH", path, {"user_groups": [group]})
    assert_error(status, body, 400, "invalid_user_group", "user_groups")
    status, body = await admin.call("PATCH", path, {"phone_number": "1" * 21})
    assert_error(status, body, 400, "invalid_schema", "phone_number")
    row = await fetch(server, "SELECT account_type, phone_number FROM users WHERE id = ?", view["id"])
    assert row == [("partner", "555")]
    status, body = await admin.call("PATCH", path, {"username": "alice@example.com"})
    assert_error(status, body, 409, "duplicate_username", "username")


async def test_scopes_rules(http: aiohttp.ClientSession, admin: Api, tenants: Tenants) -> None:
    p, p2 = await tenants.partner(), await tenants.partner()
    c, c_sibling, c2 = await tenants.customer(p), await tenants.customer(p), await tenants.customer(p2)
    group = await tenants.group(["manage_customer_users", "manage_partner_users"], partner=p)
    boss = await tenants.user("partner", http=http, partner=p, groups=[group])
    target = await tenants.new_user("customer", customer=c)
    path = f"/users/{target['id']}/"
    status, view = await boss.call("PATCH", path, {"customer_scopes": [c_sibling]})
    assert status == 200 and view["customer_scopes"] == [c_sibling]
    assert_error(*await boss.call("PATCH", path, {"partner_scopes": [p]}), 403, "permission_denied", "partner_scopes")
    assert_error(*await boss.call("PATCH", path, {"customer_scopes": [c2]}), 400, "invalid_scope", "customer_scopes")
    status, view = await admin.call("PATCH", path, {"customer_scopes": [c2], "partner_scopes": [p2]})
    assert status == 200 and view["customer_scopes"] == [c2] and view["partner_scopes"] == [p2]
    # The current value passes, even with scopes the partner user does not see.
    status, same = await boss.call("PATCH", path, {"first_name": "Same", "partner_scopes": [p2]})
    assert status == 200 and same["partner_scopes"] == [p2] and same["first_name"] == "Same", same


async def test_group_change_takes_effect_at_once(http: aiohttp.ClientSession, admin: Api, tenants: Tenants) -> None:
    p = await tenants.partner()
    c = await tenants.customer(p)
    group = await tenants.group(["manage_customer_users"], customer=c)
    boss = await tenants.user("customer", http=http, customer=c, groups=[group])
    assert (await boss.call("POST", "/users/", {"username": email("a"), "account_type": "customer", "customer": c}))[
        0
    ] == 201
    status, _ = await admin.call("PATCH", f"/users/{boss.id}/", {"user_groups": []})  # type: ignore[attr-defined]
    assert status == 200
    status, body = await boss.call(
        "POST", "/users/", {"username": email("b"), "account_type": "customer", "customer": c}
    )
    assert_error(status, body, 403, "permission_denied")


async def test_self_edit_through_users_is_held_to_me_rules(http: aiohttp.ClientSession, tenants: Tenants) -> None:
    p = await tenants.partner()
    strong = await tenants.group(["manage_partner_users", "manage_customer_users", "manage_user_groups"], partner=p)
    weak = await tenants.group(["manage_partner_users"], partner=p)
    boss = await tenants.user("partner", http=http, partner=p, groups=[weak])
    path = f"/users/{boss.id}/"  # type: ignore[attr-defined]
    assert_error(*await boss.call("PATCH", path, {"user_groups": [strong]}), 403, "read_only_field", "user_groups")
    status, view = await boss.call("PATCH", path, {"first_name": "Me"})
    assert status == 200 and view["first_name"] == "Me"


async def test_delete(server: Server, http: aiohttp.ClientSession, admin: Api, tenants: Tenants) -> None:
    view = await tenants.new_user("gooee")
    status, body = await admin.call("DELETE", f"/users/{view['id']}/")
    assert status == 204 and body is None
    assert await users_named(server, view["username"]) == []
    assert_error(*await admin.call("GET", f"/users/{view['id']}/"), 404, "user_not_found")
    _, me = await admin.call("GET", "/me")
    assert_error(*await admin.call("DELETE", f"/users/{me['id']}/"), 400, "cannot_delete_self")
    owner = await tenants.user("gooee", http=http)
    await owner.new_device("owned")
    assert_error(*await admin.call("DELETE", f"/users/{owner.id}"), 409, "user_owns_devices")  # type: ignore[attr-defined]
    assert len(await users_named(server, owner.username)) == 1  # type: ignore[attr-defined]


# --- activate / deactivate -----------------------------------------------------------------------


async def test_activate_needs_names(server: Server, admin: Api, tenants: Tenants) -> None:
    view = await tenants.new_user("gooee", first_name="", last_name="")
    status, body = await admin.call("POST", f"/users/{view['id']}/activate/")
    assert_error(status, body, 400, "names_required", "first_name")
    assert {e["field"] for e in body["errors"]} == {"first_name", "last_name"}
    assert await users_named(server, view["username"]) == [(view["id"], "pending")]
    await admin.call("PATCH", f"/users/{view['id']}/", {"first_name": "F", "last_name": "L"})
    status, active = await admin.call("POST", f"/users/{view['id']}/activate")
    assert status == 200 and active["account_status"] == "active"
    assert active["account_status_updated"] > view["account_status_updated"]


async def test_deactivate_cuts_off_at_once(http: aiohttp.ClientSession, admin: Api, tenants: Tenants) -> None:
    user = await tenants.user("gooee", http=http)
    tokens = await user.login(user.username)  # type: ignore[attr-defined]
    assert (await user.call("GET", "/me"))[0] == 200  # the token is known (and cached) now
    status, view = await admin.call("POST", f"/users/{user.id}/deactivate/")  # type: ignore[attr-defined]
    assert status == 200 and view["account_status"] == "inactive"
    assert_error(*await user.call("GET", "/me"), 401, "account_not_active")
    refresh = {"refresh_token": tokens["refresh_token"]}
    assert_error(*await user.call("POST", "/auth/refresh", refresh, auth=False), 401, "refresh_invalid")
    login = {"username": user.username, "password": PASSWORD}  # type: ignore[attr-defined]
    assert_error(*await user.call("POST", "/auth/login", login, auth=False), 401, "account_not_active")
    _, me = await admin.call("GET", "/me")
    assert_error(*await admin.call("POST", f"/users/{me['id']}/deactivate/"), 400, "cannot_deactivate_self")
    status, _ = await admin.call("POST", f"/users/{user.id}/activate/")  # type: ignore[attr-defined]
    assert status == 200
    assert (await user.call("POST", "/auth/login", login, auth=False))[0] == 200


# --- username change (202) -----------------------------------------------------------------------


async def test_username_change_request(mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession) -> None:
    admin = Api(http, mail_server.url)
    await admin.login("admin@example.com")
    tenants = Tenants(mail_server, admin)
    user = await tenants.user("gooee", http=http)
    old, new = user.username, email("renamed")  # type: ignore[attr-defined]
    path = f"/users/{user.id}/"  # type: ignore[attr-defined]
    status, view = await admin.call("PATCH", path, {"username": new, "first_name": "Renamed"})
    assert status == 202, view
    assert view["username"] == old and view["account_status"] == "transfer" and view["first_name"] == "Renamed"
    (notice,) = [m for m in await smtpd.wait_for(old, count=2) if "username change" in m.subject]
    assert new in notice.body and "until then you log in as before" in notice.body
    (confirm,) = await smtpd.wait_for(new)
    link = next(w for w in confirm.body.split() if "/#/update-email/" in w)
    key = link.split("/#/update-email/")[1].rstrip("/")
    (invitation,) = [m for m in smtpd.to(old) if "invitation" in m.subject]
    portal = next(w for w in invitation.body.split() if "/#/user-registration/" in w).split("/#/")[0]
    assert link == f"{portal}/#/update-email/{key}/" and key in confirm.body.replace(link, "")
    rows = await fetch(mail_server, "SELECT key_hash, data, used_at FROM user_keys WHERE user_id = ? AND purpose = ?",
                       user.id, "email_change")  # type: ignore[attr-defined]  # fmt: skip
    assert len(rows) == 1 and rows[0][0] == _digest("email_change", key, None) and rows[0][2] is None
    data = rows[0][1] if isinstance(rows[0][1], dict) else json.loads(rows[0][1])
    assert data == {"username": new, "status": "active"}
    assert await fetch(mail_server, "SELECT pending_username FROM users WHERE id = ?", user.id) == [(new,)]  # type: ignore[attr-defined]
    # The old username still logs in and works until the new address is verified.
    await user.login(old)
    status, me = await user.call("GET", "/me")
    assert status == 200 and me["username"] == old and me["account_status"] == "transfer"
    # Only gooee users change usernames; a taken address is a conflict.
    assert_error(*await user.call("PATCH", "/me", {"username": email("x")}), 403, "read_only_field", "username")
    assert_error(*await admin.call("PUT", path, {"username": "alice@example.com", "account_type": "gooee"}),
                 409, "duplicate_username", "username")  # fmt: skip
    other = await tenants.new_user("gooee")
    assert_error(*await admin.call("PATCH", f"/users/{other['id']}/", {"username": new}), 409, "duplicate_username")


async def test_only_gooee_change_usernames(http: aiohttp.ClientSession, tenants: Tenants) -> None:
    p = await tenants.partner()
    group = await tenants.group(["manage_partner_users"], partner=p)
    boss = await tenants.user("partner", http=http, partner=p, groups=[group])
    target = await tenants.new_user("partner", partner=p)
    status, body = await boss.call("PATCH", f"/users/{target['id']}/", {"username": email("nope")})
    assert_error(status, body, 403, "permission_denied", "username")
    status, same = await boss.call("PATCH", f"/users/{target['id']}/", {"username": target["username"]})
    assert status == 200 and same["account_status"] == "pending"


async def test_a_deactivated_account_does_not_change_its_username(
    http: aiohttp.ClientSession, admin: Api, tenants: Tenants
) -> None:
    """A transfer keeps the old username logging in: a deactivated user must not get back in through one."""
    user = await tenants.user("gooee", http=http)
    status, _ = await admin.call("POST", f"/users/{user.id}/deactivate/")  # type: ignore[attr-defined]
    assert status == 200
    status, body = await admin.call("PATCH", f"/users/{user.id}/", {"username": email("back-door")})  # type: ignore[attr-defined]
    assert_error(status, body, 400, "account_not_active", "username")
    login = {"username": user.username, "password": PASSWORD}  # type: ignore[attr-defined]
    assert_error(*await user.call("POST", "/auth/login", login, auth=False), 401, "account_not_active")


# --- preferences ---------------------------------------------------------------------------------


async def test_preferences(http: aiohttp.ClientSession, tenants: Tenants) -> None:
    p = await tenants.partner()
    c = await tenants.customer(p)
    me = await tenants.user("customer", http=http, customer=c)
    peer = await tenants.user("customer", http=http, customer=c)
    path = f"/users/{me.id}/preferences"  # type: ignore[attr-defined]
    status, prefs = await me.call("GET", path)
    assert status == 200 and prefs == DEFAULT_PREFS
    status, prefs = await me.call("PATCH", path + "/", {"timezone": "US/Eastern"})
    assert status == 200 and prefs == {**DEFAULT_PREFS, "timezone": "US/Eastern"}
    full = {"date_format": "YYYY-MM-DD", "number_format": "fr_FR", "timezone": "UTC", "use_24": True, "use_local": True}
    status, prefs = await me.call("PUT", path, full)
    assert status == 200 and prefs == full
    assert (await me.call("GET", path + "/"))[1] == full
    for method, body, field in (
        ("PUT", {"timezone": "UTC"}, "date_format"),
        ("PATCH", {"timezone": "Mars/Olympus"}, "timezone"),
        ("PATCH", {"timezone": "../../etc/passwd"}, "timezone"),
        ("PATCH", {"number_format": "xx_YY"}, "number_format"),
        ("PATCH", {"date_format": "YY"}, "date_format"),
        ("PATCH", {"use_24": "maybe"}, "use_24"),
        ("PATCH", {"colour": "blue"}, "colour"),
    ):
        status, err = await me.call(method, path, body)
        assert_error(status, err, 400, "invalid_schema", field)
    assert (await me.call("GET", path))[1] == full
    assert_error(*await peer.call("GET", path), 403, "permission_denied")
    assert_error(*await peer.call("PATCH", path, {"use_24": False}), 403, "permission_denied")


# --- avatars -------------------------------------------------------------------------------------


async def test_avatars(admin: Api, tenants: Tenants) -> None:
    view = await tenants.new_user("gooee")
    path = f"/users/{view['id']}/"
    for fmt, kind in (("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")):
        data = image(fmt)
        for sent in (b64(data), f"data:image/{kind};base64,{b64(data)}"):
            status, got = await admin.call("PATCH", path, {"avatar": sent})
            assert status == 200 and got["avatar"] == f"data:image/{kind};base64,{b64(data)}", got
    for bad in (b64(image("GIF")), b64(b"plain text"), "%%%", "data:image/png,abc", b64(image("PNG"))[:-8]):
        assert_error(*await admin.call("PATCH", path, {"avatar": bad}), 400, "invalid_avatar", "avatar")
    status, cleared = await admin.call("PATCH", path, {"avatar": None})
    assert status == 200 and cleared["avatar"] is None


def test_avatar_over_one_mib_is_refused() -> None:
    """Checked on the decoded size (an encoded 1 MiB image would also exceed the 1 MiB body limit over HTTP)."""
    big = io.BytesIO()
    Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3)).save(big, format="PNG")  # noise: no compression
    assert len(big.getvalue()) > MAX_BYTES
    with pytest.raises(InvalidPayload) as caught:
        decode_avatar(b64(big.getvalue()))
    assert caught.value.code == "invalid_avatar" and caught.value.errors[0]["field"] == "avatar"
    assert "too large" in caught.value.detail
    assert decode_avatar(b64(image("PNG"))) == (base64.b64decode(b64(image("PNG"))), "image/png")
