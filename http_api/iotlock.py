"""IoTLock over REST (spec/iotlock.md, docs/iotlock.md): accounts and members, gateways, mailboxes,
PINs, unlocking, commands and history. Rules in handlers/iotlock*."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers import iotlock
from handlers.iotlock import (
    AccountView,
    Detail,
    GatewayList,
    GatewayView,
    HistoryPage,
    InviteMember,
    LockActivation,
    LockRegistration,
    MailboxView,
    MemberView,
    NewGateway,
    NewGatewayView,
    NewMailbox,
    NewMailboxView,
    NewPin,
)
from handlers.iotlock_commands import CommandView, SendOptions, WaitQuery
from handlers.principal import Principal
from handlers.tenancy import PageQuery
from http_api.endpoint import Endpoint, Reply
from http_api.state import client_address, ctx_of

IL = "/iotlock"
GATEWAY = {"id": "the gateway's id"}
MAILBOX = {"id": "the mailbox's id"}
MEMBERS_ONLY = "Members of the account only: anyone else gets 404, as if it did not exist."
SENDS = (
    "Answers 202 with the command (docs/iotlock.md: pending, delivered, acknowledged, failed, expired); `?wait=` "
    "holds the answer up to that many seconds for the outcome, `?expires_in=` sets how long the gateway has. "
)


def _id(request: web.Request, name: str = "id") -> str:
    return request.match_info[name]


def _sent(view: dict[str, Any]) -> Reply:
    return Reply(view, 202)


async def register_lock_account(request: web.Request, body: LockRegistration) -> Reply:
    return Reply(await iotlock.register(ctx_of(request), body, address=client_address(request)), 201)


async def activate_lock_account(request: web.Request, body: LockActivation) -> dict[str, str]:
    return await iotlock.activate(ctx_of(request), body, address=client_address(request))


async def get_lock_account(request: web.Request, who: Principal) -> dict[str, Any]:
    return await iotlock.get_account(who)


async def add_lock_member(request: web.Request, who: Principal, body: InviteMember) -> dict[str, Any]:
    return await iotlock.add_member(ctx_of(request), who, body)


async def remove_lock_member(request: web.Request, who: Principal) -> None:
    await iotlock.remove_member(who, _id(request, "user_id"))


async def create_lock_gateway(request: web.Request, who: Principal, body: NewGateway) -> dict[str, Any]:
    return await iotlock.create_gateway(ctx_of(request), who, body)


async def list_lock_gateways(request: web.Request, who: Principal, query: PageQuery) -> dict[str, Any]:
    return await iotlock.list_gateways(who, query)


async def get_lock_gateway(request: web.Request, who: Principal) -> dict[str, Any]:
    return await iotlock.get_gateway(who, _id(request))


async def delete_lock_gateway(request: web.Request, who: Principal, query: SendOptions) -> Reply:
    return _sent(await iotlock.delete_gateway(ctx_of(request), who, _id(request), query))


async def create_mailbox(request: web.Request, who: Principal, body: NewMailbox) -> dict[str, Any]:
    return await iotlock.create_mailbox(ctx_of(request), who, _id(request), body)


async def get_mailbox(request: web.Request, who: Principal) -> dict[str, Any]:
    return await iotlock.get_mailbox(who, _id(request))


async def delete_mailbox(request: web.Request, who: Principal, query: SendOptions) -> Reply:
    return _sent(await iotlock.delete_mailbox(ctx_of(request), who, _id(request), query))


async def add_pin(request: web.Request, who: Principal, body: NewPin, query: SendOptions) -> Reply:
    return _sent(await iotlock.add_pin(ctx_of(request), who, _id(request), body, query))


async def remove_pin(request: web.Request, who: Principal, query: SendOptions) -> Reply:
    return _sent(await iotlock.remove_pin(ctx_of(request), who, _id(request), _id(request, "pin_id"), query))


async def unlock_mailbox(request: web.Request, who: Principal, query: SendOptions) -> Reply:
    return _sent(await iotlock.unlock(ctx_of(request), who, _id(request), query))


async def mailbox_history(request: web.Request, who: Principal, query: PageQuery) -> dict[str, Any]:
    return await iotlock.history(who, _id(request), query)


async def get_lock_command(request: web.Request, who: Principal, query: WaitQuery) -> dict[str, Any]:
    return await iotlock.get_command(ctx_of(request), who, _id(request), query.wait)


# fmt: off
ENDPOINTS = [
    Endpoint(
        "POST", f"{IL}/register", register_lock_account, "Register an IoTLock account and its first member",
        {201: Detail}, errors=(400, 429), auth=None, body=LockRegistration, tag="iotlock",
        description="The account and its first member (a pending user) and a mail with the activation key. 400 "
        "`invalid_schema`, `invalid_email`, `weak_password`, `duplicate_username` (names `email`): nothing is "
        "written then. 429 `rate_limited` (`limits.iotlock_registration`).",
    ),
    Endpoint(
        "POST", f"{IL}/activate", activate_lock_account, "Activate the account with the key from the mail",
        {200: Detail}, errors=(400, 410, 429), auth=None, body=LockActivation, tag="iotlock",
        description="The key works once: 400 `invalid_key` for an unknown or used one, 410 `key_expired`.",
    ),
    Endpoint(
        "GET", f"{IL}/account", get_lock_account, "The caller's account and its members", {200: AccountView},
        errors=(404,), tag="iotlock", description="404 `account_not_found` for a user in no IoTLock account.",
    ),
    Endpoint(
        "POST", f"{IL}/account/members", add_lock_member, "Invite a member by email", {201: MemberView},
        errors=(400, 404, 409), body=InviteMember, tag="iotlock",
        description="A new address gets a pending user and the invitation mail (activation key; `POST "
        "/users/register/` sets names and password); a user in no account joins at once; 409 `already_member` "
        "for one in an account.",
    ),
    Endpoint(
        "DELETE", f"{IL}/account/members/{{user_id}}", remove_lock_member, "Remove a member (yourself: leave)",
        {204: None}, errors=(409,), tag="iotlock", path_params={"user_id": "the member's user id"},
        description="409 `last_member`: the last member cannot leave while the account has gateways. 404 "
        "`member_not_found` for a user not in the caller's account.",
    ),
    Endpoint(
        "POST", f"{IL}/gateways", create_lock_gateway, "Add a gateway: a thing with its channel and MQTT login",
        {201: NewGatewayView}, errors=(400, 404), body=NewGateway, tag="iotlock",
        description="The `mqtt.password` is shown once (stored hashed). CONNECT and REGISTER are sent at once and "
        "wait in the gateway's session until it connects (client id = username = thing id, clean_session=0).",
    ),
    Endpoint(
        "GET", f"{IL}/gateways", list_lock_gateways, "The account's gateways", {200: GatewayList}, query=PageQuery,
        errors=(404,), tag="iotlock",
    ),
    Endpoint(
        "GET", f"{IL}/gateways/{{id}}", get_lock_gateway, "One gateway, online state and mailboxes", {200: GatewayView},
        tag="iotlock", path_params=GATEWAY, description=MEMBERS_ONLY,
    ),
    Endpoint(
        "DELETE", f"{IL}/gateways/{{id}}", delete_lock_gateway, "Remove a gateway (DESTRUCT)", {202: CommandView},
        query=SendOptions, tag="iotlock", path_params=GATEWAY,
        description="Gone from the API at once; its login works until it answered DESTRUCT or the command expired. "
        + SENDS + MEMBERS_ONLY,
    ),
    Endpoint(
        "POST", f"{IL}/gateways/{{id}}/mailboxes", create_mailbox, "Add a mailbox to a gateway",
        {201: NewMailboxView}, errors=(400,), body=NewMailbox, tag="iotlock", path_params=GATEWAY,
        description="Its channel is connected to the gateway (the gateway's session is subscribed to it); ADD and "
        "Mailbox are sent. " + MEMBERS_ONLY,
    ),
    Endpoint(
        "GET", f"{IL}/mailboxes/{{id}}", get_mailbox, "One mailbox and its PINs (never their values)",
        {200: MailboxView}, tag="iotlock", path_params=MAILBOX, description=MEMBERS_ONLY,
    ),
    Endpoint(
        "DELETE", f"{IL}/mailboxes/{{id}}", delete_mailbox, "Remove a mailbox (DELETE to the gateway)",
        {202: CommandView}, query=SendOptions, tag="iotlock", path_params=MAILBOX, description=SENDS + MEMBERS_ONLY,
    ),
    Endpoint(
        "POST", f"{IL}/mailboxes/{{id}}/pins", add_pin, "Add a PIN (AUTH)", {202: CommandView},
        errors=(400, 409), body=NewPin, query=SendOptions, tag="iotlock", path_params=MAILBOX,
        description="`pin`: 4 to 8 digits, not starting with 0 (400 `invalid_pin`); the same PIN twice 409 "
        "`duplicate_pin`. The command's `pin_id` names the PIN. " + SENDS + MEMBERS_ONLY,
    ),
    Endpoint(
        "DELETE", f"{IL}/mailboxes/{{id}}/pins/{{pin_id}}", remove_pin, "Remove a PIN (UNAUTH)", {202: CommandView},
        query=SendOptions, tag="iotlock", path_params={**MAILBOX, "pin_id": "the PIN's id"},
        description="404 `pin_not_found`. " + SENDS + MEMBERS_ONLY,
    ),
    Endpoint(
        "POST", f"{IL}/mailboxes/{{id}}/unlock", unlock_mailbox, "Unlock a mailbox (UNLOCK)", {202: CommandView},
        query=SendOptions, tag="iotlock", path_params=MAILBOX, description=SENDS + MEMBERS_ONLY,
    ),
    Endpoint(
        "GET", f"{IL}/mailboxes/{{id}}/events", mailbox_history, "The mailbox's history, newest first",
        {200: HistoryPage}, query=PageQuery, tag="iotlock", path_params=MAILBOX,
        description="Commands sent, their outcomes, and the events the gateway reported. " + MEMBERS_ONLY,
    ),
    Endpoint(
        "GET", f"{IL}/commands/{{id}}", get_lock_command, "One command", {200: CommandView}, query=WaitQuery,
        tag="iotlock", path_params={"id": "the command's id"},
        description="`?wait=` (0-30 s) answers once the command is acknowledged, failed or expired, or when the "
        "time is up. " + MEMBERS_ONLY,
    ),
]
# fmt: on
