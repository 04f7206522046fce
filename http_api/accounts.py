"""/auth (/me is in http_api/users.py)."""

from __future__ import annotations

from aiohttp import web

from handlers import accounts
from handlers.accounts import LoginRequest, Principal, RefreshRequest, Tokens
from http_api.endpoint import Endpoint
from http_api.state import client_address, ctx_of


async def login(request: web.Request, body: LoginRequest) -> dict[str, object]:
    return await accounts.login(ctx_of(request), body, address=client_address(request))


async def refresh(request: web.Request, body: RefreshRequest) -> dict[str, object]:
    return await accounts.refresh(ctx_of(request), body)


async def logout(request: web.Request, who: Principal, body: RefreshRequest) -> None:
    await accounts.logout(ctx_of(request), who, body)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/auth/login",
        login,
        "Log in: an access token and a refresh token",
        {200: Tokens},
        errors=(401, 429),
        auth=None,
        body=LoginRequest,
        tag="accounts",
        description="401 `invalid_credentials` or `account_not_active`. A user with two-factor authentication: "
        "401 `two_factor_required` with `method` (app, email, sms; email/sms: a code was sent) when "
        "`two_factor_auth_code` is missing, `invalid_two_factor_code` for a wrong or already used one, "
        "`two_factor_code_expired`. 429 `rate_limited` (too many failed "
        "logins from this address) or `account_locked` (too many for this username), with `Retry-After`; "
        "see docs/security.md.",
    ),
    Endpoint(
        "POST",
        "/auth/refresh",
        refresh,
        "New tokens for a refresh token (which is used up)",
        {200: Tokens},
        errors=(401,),
        auth=None,
        body=RefreshRequest,
        tag="accounts",
        description="401 `refresh_invalid` for an unknown, used, revoked or expired refresh token.",
    ),
    Endpoint(
        "POST",
        "/auth/logout",
        logout,
        "Revoke one of the caller's refresh tokens",
        {204: None},
        body=RefreshRequest,
        tag="accounts",
        description="Access tokens stay valid until they expire, as JWTs do.",
    ),
]
