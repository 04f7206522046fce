"""The mailed-key flows: registration, resending an invitation, password recovery, email change."""

from __future__ import annotations

from aiohttp import web

from handlers import email_change, invitations, passwords, registration
from handlers.accounts import Principal
from handlers.email_change import UpdateEmailRequest
from handlers.passwords import AppQuery, PasswordChange, PasswordResetRequest
from handlers.registration import Detail, RegisterRequest
from http_api.endpoint import Endpoint
from http_api.state import client_address, ctx_of


async def register(request: web.Request, body: RegisterRequest) -> dict[str, str]:
    return await registration.register(ctx_of(request), body, address=client_address(request))


async def resend_invitation(request: web.Request, who: Principal, query: AppQuery) -> dict[str, str]:
    return await invitations.resend(
        ctx_of(request), who, request.match_info["id"], mobile=query.mobile, scheme=query.scheme
    )


async def request_password_change(request: web.Request, body: PasswordResetRequest, query: AppQuery) -> dict[str, str]:
    return await passwords.request_reset(ctx_of(request), body, query, address=client_address(request))


async def change_password(request: web.Request, body: PasswordChange) -> dict[str, str]:
    return await passwords.change_password(ctx_of(request), body, address=client_address(request))


async def update_email(request: web.Request, body: UpdateEmailRequest) -> dict[str, str]:
    return await email_change.update_email(ctx_of(request), body, address=client_address(request))


async def email_change_alias(request: web.Request, body: UpdateEmailRequest) -> dict[str, str]:
    return await update_email(request, body)


LIMITED = "429 `rate_limited` with `Retry-After` when this address or this {what} made too many requests."

ENDPOINTS = [
    Endpoint(
        "POST",
        "/users/register/",
        register,
        "Finish an invited account: names, password, the activation key",
        {201: Detail},
        errors=(400, 410, 429),
        auth=None,
        body=RegisterRequest,
        tag="users",
        description="400 `invalid_schema` (a field missing or too long), `password_mismatch` (names "
        "`password_confirm`), `weak_password` (names each rule broken), `invalid_avatar`, `invalid_key` (unknown "
        "or used key, or the account is no longer pending). 410 `key_expired`: the account becomes `expired`. "
        "Nothing is used up or changed by a request that fails. " + LIMITED.format(what="key"),
    ),
    Endpoint(
        "POST",
        "/users/{id}/resend_invitation/",
        resend_invitation,
        "Mail the user a new invitation",
        {201: Detail},
        errors=(400, 403, 404),
        query=AppQuery,
        tag="users",
        path_params={"id": "the user's id"},
        description="The earlier activation key stops working. 404 `user_not_found` for a user the caller does "
        "not see; 403 without `manage_partner_users` / `manage_customer_users` (by the user's account type); "
        "400 `already_active` for an `active` or `transfer` account.",
    ),
    Endpoint(
        "POST",
        "/users/password/request/change/",
        request_password_change,
        "Mail a password reset link",
        {200: Detail},
        errors=(429,),
        auth=None,
        body=PasswordResetRequest,
        query=AppQuery,
        tag="users",
        description="The same answer whether or not the user exists; only an `active` (or `transfer`) user gets "
        "a mail. The link is `{portal}/#/reset-password/{uidb64}/{token}?mobile=...`. "
        + LIMITED.format(what="username"),
    ),
    Endpoint(
        "POST",
        "/users/password/change/",
        change_password,
        "Set a new password with a reset link's uidb64 and token",
        {200: Detail},
        errors=(400, 410, 429),
        auth=None,
        body=PasswordChange,
        tag="users",
        description="400 `password_mismatch`, `weak_password`, or `invalid_key` (unknown, used, another user's, or "
        "voided by a later password change). 410 `key_expired`. The user's refresh tokens are revoked. "
        + LIMITED.format(what="user"),
    ),
    Endpoint(
        "POST",
        "/users/update_email",
        update_email,
        "Finish a username change with the key mailed to the new address",
        {200: Detail},
        errors=(400, 409, 410, 429),
        auth=None,
        body=UpdateEmailRequest,
        tag="users",
        description="400 `invalid_key`; 410 `key_expired` (the change is dropped: the old username stays); 409 "
        "`duplicate_username` (names `username`) if the name was taken meanwhile. The user's refresh tokens are "
        "revoked. " + LIMITED.format(what="key"),
    ),
    Endpoint(
        "POST",
        "/users/email_change",
        email_change_alias,
        "Same as POST /users/update_email (the spec example's path)",
        {200: Detail},
        errors=(400, 409, 410, 429),
        auth=None,
        body=UpdateEmailRequest,
        tag="users",
        description="spec/users.rst documents `/users/update_email` and shows `/users/email_change` in its example "
        "request; both are served.",
    ),
]
