"""/users/, /users/{id}/, activate / deactivate, preferences, and /me (spec/users.rst)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers import preferences, users
from handlers.preferences import PatchPreferences, PreferencesView, PutPreferences
from handlers.principal import Principal
from handlers.users import CreateQuery, CreateUser, PatchUser, PutMe, PutUser, UserList, UserQuery, UserView
from http_api.endpoint import Endpoint, Reply
from http_api.state import ctx_of

USER = "/users/{id}/"
ID = {"id": "the user's id (a UUID)"}


def _id(request: web.Request) -> str:
    return request.match_info["id"]


def _maybe_accepted(result: tuple[dict[str, Any], bool]) -> dict[str, Any] | Reply:
    view, accepted = result
    return Reply(view, 202) if accepted else view


async def create_user(request: web.Request, who: Principal, body: CreateUser, query: CreateQuery) -> Reply:
    view = await users.create_user(
        ctx_of(request), who, body, portal=query.portal, mobile=query.mobile, scheme=query.scheme
    )
    return Reply(view, 201)


async def list_users(request: web.Request, who: Principal, query: UserQuery) -> dict[str, Any]:
    return await users.list_users(who, query)


async def get_user(request: web.Request, who: Principal) -> dict[str, Any]:
    return await users.get_user(who, _id(request))


async def put_user(request: web.Request, who: Principal, body: PutUser) -> dict[str, Any] | Reply:
    return _maybe_accepted(await users.update_user(ctx_of(request), who, _id(request), body))


async def patch_user(request: web.Request, who: Principal, body: PatchUser) -> dict[str, Any] | Reply:
    return _maybe_accepted(await users.update_user(ctx_of(request), who, _id(request), body))


async def delete_user(request: web.Request, who: Principal) -> None:
    await users.delete_user(ctx_of(request), who, _id(request))


async def activate_user(request: web.Request, who: Principal) -> dict[str, Any]:
    return await users.activate_user(ctx_of(request), who, _id(request))


async def deactivate_user(request: web.Request, who: Principal) -> dict[str, Any]:
    return await users.deactivate_user(ctx_of(request), who, _id(request))


async def get_me(request: web.Request, who: Principal) -> dict[str, Any]:
    return await users.get_user(who, who.user_id)


async def put_me(request: web.Request, who: Principal, body: PutMe) -> dict[str, Any]:
    view, _ = await users.update_user(ctx_of(request), who, who.user_id, body, me=True)
    return view


async def patch_me(request: web.Request, who: Principal, body: PatchUser) -> dict[str, Any]:
    view, _ = await users.update_user(ctx_of(request), who, who.user_id, body, me=True)
    return view


async def get_preferences(request: web.Request, who: Principal) -> dict[str, Any]:
    return await preferences.get_preferences(who, _id(request))


async def put_preferences(request: web.Request, who: Principal, body: PutPreferences) -> dict[str, Any]:
    return await preferences.set_preferences(who, _id(request), body)


async def patch_preferences(request: web.Request, who: Principal, body: PatchPreferences) -> dict[str, Any]:
    return await preferences.set_preferences(who, _id(request), body)


MANAGE = "Gooee users, or users with `manage_partner_users` / `manage_customer_users` for that user (docs/users.md)."
UPDATE = (
    "Changing `username` (gooee users only; others 403 naming it) answers 202: the username stays until the new "
    "address is verified with POST /users/update_email. 400 naming the field for a broken constraint, 403 "
    "`permission_denied` / `read_only_field`, 409 `duplicate_username`. " + MANAGE
)
ME_UPDATE = (
    "403 `read_only_field` naming the field for a change to account_type, is_api_user, buildings, username, "
    "partner, customer, customer_scopes, partner_scopes or user_groups (their current value passes)."
)
PREFS = "The user themself, or whoever may manage them (else 403 `permission_denied`)."

ENDPOINTS = [
    Endpoint(
        "POST", "/users/", create_user, "Create a user: pending, invited by mail",
        {201: UserView}, errors=(403, 409), body=CreateUser, query=CreateQuery, tag="users",
        description="400 naming the field (complex constraints, password rules, groups, avatar), 403 "
        "`permission_denied`, 409 `duplicate_username`. " + MANAGE,
    ),
    Endpoint(
        "GET", "/users/", list_users, "The users the caller sees", {200: UserList}, query=UserQuery, tag="users",
    ),
    Endpoint("GET", USER, get_user, "One user", {200: UserView}, tag="users", path_params=ID,
             description="404 `user_not_found` for a user out of view, missing, or a malformed id."),
    Endpoint(
        "PUT", USER, put_user, "Update a user", {200: UserView, 202: UserView}, errors=(403, 409),
        body=PutUser, tag="users", path_params=ID, description=UPDATE,
    ),
    Endpoint(
        "PATCH", USER, patch_user, "Partially update a user", {200: UserView, 202: UserView}, errors=(403, 409),
        body=PatchUser, tag="users", path_params=ID, description=UPDATE,
    ),
    Endpoint(
        "DELETE", USER, delete_user, "Delete a user", {204: None}, errors=(400, 403, 409), tag="users",
        path_params=ID, description="400 `cannot_delete_self`, 409 `user_owns_devices`. " + MANAGE,
    ),
    Endpoint(
        "POST", USER + "activate/", activate_user, "Activate a user", {200: UserView}, errors=(400, 403),
        tag="users", path_params=ID, description="400 `names_required` without a first and last name. " + MANAGE,
    ),
    Endpoint(
        "POST", USER + "deactivate/", deactivate_user, "Deactivate a user: login and their tokens refused",
        {200: UserView}, errors=(400, 403), tag="users", path_params=ID,
        description="400 `cannot_deactivate_self`. " + MANAGE,
    ),
    Endpoint("GET", "/me", get_me, "The calling user", {200: UserView}, tag="users"),
    Endpoint(
        "PUT", "/me", put_me, "Update the calling user", {200: UserView}, errors=(403,), body=PutMe, tag="users",
        description=ME_UPDATE,
    ),
    Endpoint(
        "PATCH", "/me", patch_me, "Partially update the calling user", {200: UserView}, errors=(403,),
        body=PatchUser, tag="users", description=ME_UPDATE,
    ),
    Endpoint(
        "GET", "/users/{id}/preferences", get_preferences, "A user's preferences", {200: PreferencesView},
        errors=(403,), tag="users", path_params=ID, description=PREFS,
    ),
    Endpoint(
        "PUT", "/users/{id}/preferences", put_preferences, "Replace a user's preferences", {200: PreferencesView},
        errors=(403,), body=PutPreferences, tag="users", path_params=ID, description=PREFS,
    ),
    Endpoint(
        "PATCH", "/users/{id}/preferences", patch_preferences, "Change some of a user's preferences",
        {200: PreferencesView}, errors=(403,), body=PatchPreferences, tag="users", path_params=ID, description=PREFS,
    ),
]  # fmt: skip
