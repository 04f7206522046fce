"""/users/{id}/two_factor: setup, verify, details, disable (the rules are in handlers/two_factor.py)."""

from __future__ import annotations

from aiohttp import web

from handlers import two_factor
from handlers.principal import Principal
from handlers.two_factor import DisableRequest, SetupRequest, SetupView, TwoFactorDetail, TwoFactorView, VerifyRequest
from http_api.endpoint import Endpoint
from http_api.state import client_address, ctx_of

BASE = "/users/{id}/two_factor"
WHO = (
    "Only the user themself (403 `permission_denied` for other users the caller sees; 404 `user_not_found` "
    "for users outside the caller's view)."
)


async def two_factor_setup(request: web.Request, who: Principal, body: SetupRequest) -> dict[str, object]:
    return await two_factor.setup(ctx_of(request), who, request.match_info["id"], body)


async def two_factor_verify(request: web.Request, who: Principal, body: VerifyRequest) -> dict[str, object]:
    return await two_factor.verify(
        ctx_of(request), who, request.match_info["id"], body, address=client_address(request)
    )


async def two_factor_details(request: web.Request, who: Principal) -> dict[str, object]:
    return await two_factor.details(who, request.match_info["id"])


async def two_factor_disable(request: web.Request, who: Principal, body: DisableRequest) -> dict[str, object]:
    return await two_factor.disable(
        ctx_of(request), who, request.match_info["id"], body, address=client_address(request)
    )


ENDPOINTS = [
    Endpoint(
        "POST", f"{BASE}/setup", two_factor_setup, "Start setting up two-factor authentication",
        {200: SetupView}, errors=(403,), body=SetupRequest, tag="two-factor",
        description="`app`: a new TOTP secret, its otpauth:// URI and QR code (nothing changes until verify); "
        "`email` / `sms`: a 6-digit code is sent. 400 `invalid_schema` (unknown method, sms without "
        "phone_number), `two_factor_already_enabled` (disable it first). " + WHO,
    ),
    Endpoint(
        "POST", f"{BASE}/verify", two_factor_verify, "Enable two-factor authentication with the setup's code",
        {200: TwoFactorDetail}, errors=(403, 429), body=VerifyRequest, tag="two-factor",
        description="400 `invalid_code`, `code_expired`, `no_pending_setup`, `two_factor_already_enabled`. Wrong "
        "codes count against the `two_factor` budgets: 429 `rate_limited` / `account_locked`. " + WHO,
    ),
    Endpoint(
        "GET", BASE, two_factor_details, "The enabled two-factor method and its configuration",
        {200: TwoFactorView}, errors=(400, 403), tag="two-factor",
        description="400 `two_factor_not_enabled`. The user themself or a gooee admin.",
    ),
    Endpoint(
        "POST", f"{BASE}/disable", two_factor_disable, "Disable two-factor authentication",
        {200: TwoFactorDetail}, errors=(403, 429), body=DisableRequest, tag="two-factor",
        description="The user themself, with a current code: the app's, or for email/sms one sent by a request "
        "without a code (400 `two_factor_code_sent`). 400 `invalid_code`, `code_expired`, "
        "`two_factor_code_required`, `two_factor_not_enabled`; 429 as for verify. A gooee admin disables another "
        "user's without a code (account recovery).",
    ),
]  # fmt: skip
