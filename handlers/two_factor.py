"""Two-factor authentication (spec/users.rst "Two-Factor Authentication"): setup, verify, details,
disable, and the second step of a login.

Methods: `app` (TOTP, RFC 6238, 30 s steps, one step of clock drift either way), `email` and `sms`
(a 6-digit one-time code, valid `users.two_factor_code_minutes`).

Where things live:
- The ENABLED configuration is on the user: `two_factor_method`, `two_factor_config` (the phone
  number for sms), `two_factor_secret` (app) and `two_factor_last_step` (the last TOTP step
  accepted: a code, or an older one, never works twice).
- A PENDING setup is a one-time `user_keys` row of purpose `two_factor_setup`, data
  {"method", "secret" (app) | "phone_number" (sms)}: the enabled configuration is untouched until
  verify succeeds. A newer setup voids the older one.
- Codes mailed or texted for a login or a disable are `user_keys` rows of purpose `two_factor`.

Who: only the user themself sets up, verifies and disables with a code; a gooee admin may also read
another user's configuration and disable it without a code (account recovery). Users outside the
caller's view answer 404, users in view but not the caller's own 403.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

import pyotp
from pydantic import BaseModel, Field, field_validator, model_validator

from handlers import qr, user_keys
from handlers.context import Context
from handlers.errors import Forbidden, Gone, InvalidPayload, NotFound, Unauthorized
from handlers.mail import send_mail
from handlers.principal import Principal
from handlers.ratelimit import Attempt
from handlers.sms import send_sms
from handlers.tenancy import users_seen_by
from handlers.views import View
from models.accounts import User, UserKey

Method = Literal["app", "email", "sms"]
SETUP = "two_factor_setup"  # user_keys purpose of a pending setup
CODE = "two_factor"  # user_keys purpose of a login / disable code
CODE_PATTERN = r"^[0-9]{6}$"
PHONE_PATTERN = r"^\+[0-9][0-9 ().-]*$"


class SetupRequest(BaseModel):
    two_factor_auth_method: Method
    phone_number: str | None = Field(
        None,
        max_length=20,
        pattern=PHONE_PATTERN,
        description="required for sms: international format with the country code, e.g. +1-202-555-0111",
    )

    @field_validator("phone_number")
    @classmethod
    def _digits(cls, value: str | None) -> str | None:
        if value is not None and not 7 <= len(re.sub(r"[^0-9]", "", value)) <= 15:
            raise ValueError("a phone number has 7 to 15 digits, the country code included")
        return value

    @model_validator(mode="after")
    def _phone_for_sms(self) -> SetupRequest:
        if self.two_factor_auth_method == "sms" and not self.phone_number:
            raise ValueError("phone_number is required when two_factor_auth_method is 'sms'")
        return self


class VerifyRequest(BaseModel):
    two_factor_auth_code: str = Field(pattern=CODE_PATTERN, description="the 6-digit code from the app, mail or SMS")
    two_factor_auth_method: Method = Field(description="the method being set up")


class DisableRequest(BaseModel):
    two_factor_auth_code: str | None = Field(
        None,
        pattern=CODE_PATTERN,
        description="a current code of the enabled method; for email/sms, leave it out to be sent one",
    )


class AppSetupDetails(View):
    issuer: str
    secret: str = Field(description="base32 TOTP secret (SHA-1, 6 digits, 30 s)")
    account_name: str
    provisioning_uri: str = Field(description="otpauth:// URI (Key Uri Format) for authenticator apps")
    qr_code: str = Field(description="the provisioning URI as a QR code: a data:image/png;base64 URI")


class NoSetupDetails(View):
    """Nothing to provision: the code went by mail or SMS."""


class SetupView(View):
    detail: str
    setup_details: AppSetupDetails | NoSetupDetails


class TwoFactorDetail(View):
    detail: str


class TwoFactorView(View):
    two_factor_auth_method: Method
    config: dict[str, str] = Field(description='{"phone_number"} for sms, {} otherwise; never the secret')


# --- who may call ---------------------------------------------------------------------------------


async def _target(principal: Principal, user_id: str, *, admin_may: bool = False) -> User:
    """The user named in the path: 404 outside the caller's view, 403 if not the caller's own."""
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        uid = None
    user = await User.filter(users_seen_by(principal), id=uid).first() if uid else None
    if user is None:
        raise NotFound(f"user {user_id[:64]} not found", code="user_not_found")
    if str(user.id) != principal.user_id and not (admin_may and principal.is_admin):
        raise Forbidden("only the user themself manages their two-factor authentication", code="permission_denied")
    return user


# --- codes -----------------------------------------------------------------------------------------


def totp_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The TOTP step (counter) `code` belongs to, within one step of now; None if it matches none.
    pyotp's `verify(code, valid_window=1)`, telling which step matched (for replay refusal)."""
    totp = pyotp.TOTP(secret)
    current = totp.timecode(time.time() if now is None else now)
    matched = None
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            matched = step
    return matched


async def send_code(ctx: Context, user: User, method: str, purpose: str, phone_number: str = "") -> None:
    """Issue a 6-digit code (voiding the user's earlier ones of `purpose`) and mail or text it."""
    # Every code sent costs a mail or an SMS to an address the account chose: bounded per account.
    await ctx.limiter.attempt("two_factor_send", account=user.username)
    minutes = ctx.users.two_factor_code_minutes
    data = {"method": method, **({"phone_number": phone_number} if phone_number else {})}
    code = await user_keys.issue(user, purpose, timedelta(minutes=minutes), data, code=True)
    lasts = f"It expires in {minutes:g} minutes."
    if method == "email":
        await send_mail(
            ctx,
            user.username,
            "Your Gatehouse authentication code",
            f"Your authentication code is {code}.\n{lasts}\nIf you did not ask for it, change your password.\n",
        )
    else:
        await send_sms(ctx, e164(phone_number), f"Your Gatehouse authentication code is {code}. {lasts}")


def e164(phone_number: str) -> str:
    """+1-202-555-0111 -> +12025550111 (what an SMS provider takes)."""
    return "+" + re.sub(r"[^0-9]", "", phone_number)


async def _take_code(user: User, code: str, purpose: str, method: str) -> UserKey | None:
    """Use up a mailed/texted code of `method`: its row, or None if unknown, used, or for another
    method. Raises Gone (410 `key_expired`) for an expired one."""
    try:
        row = await user_keys.take(purpose, code, user_id=str(user.id), what="code")
    except InvalidPayload:
        return None
    return row if row.data.get("method") == method else None


async def _take_totp(user: User, code: str) -> bool:
    """Accept a TOTP code of the enabled app once: its step must be later than the last accepted
    one, recorded by one conditional update (two concurrent logins with one code: one wins)."""
    step = totp_step(user.two_factor_secret, code)
    if step is None:
        return False
    won = await User.filter(id=user.id, two_factor_method="app", two_factor_last_step__lt=step).update(
        two_factor_last_step=step
    )
    return bool(won)


async def _current_code_ok(user: User, code: str) -> bool:
    """A code of the user's enabled method, used up if it is right."""
    if user.two_factor_method == "app":
        return await _take_totp(user, code)
    return await _take_code(user, code, CODE, user.two_factor_method or "") is not None


# --- the endpoints -----------------------------------------------------------------------------------


async def setup(ctx: Context, principal: Principal, user_id: str, req: SetupRequest) -> dict[str, object]:
    """Start a setup: the app's secret, or a code by mail or SMS. Nothing changes until verify."""
    user = await _target(principal, user_id)
    if user.two_factor_method:
        raise InvalidPayload(
            f"'{user.two_factor_method}' two-factor authentication is already enabled; disable it first",
            code="two_factor_already_enabled",
        )
    method = req.two_factor_auth_method
    ttl = timedelta(minutes=ctx.users.two_factor_code_minutes)
    if method == "app":
        secret = pyotp.random_base32()
        await user_keys.issue(user, SETUP, ttl, {"method": "app", "secret": secret})
        issuer = ctx.users.totp_issuer
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=issuer)
        return {
            "detail": "Please setup the authenticator app (e.g Google Authenticator) on your phone.",
            "setup_details": {
                "issuer": issuer,
                "secret": secret,
                "account_name": user.username,
                "provisioning_uri": uri,
                "qr_code": qr.data_uri(uri),
            },
        }
    if method == "email":
        await send_code(ctx, user, "email", SETUP)
        return {"detail": f"An email was sent with your authentication code to {user.username}.", "setup_details": {}}
    phone = req.phone_number or ""
    await send_code(ctx, user, "sms", SETUP, phone)
    return {"detail": f"A SMS was sent with your authentication code to {phone}.", "setup_details": {}}


async def verify(
    ctx: Context, principal: Principal, user_id: str, req: VerifyRequest, *, address: str = ""
) -> dict[str, object]:
    """Check the code against the pending setup; on success it becomes the enabled method."""
    user = await _target(principal, user_id)
    if user.two_factor_method:
        raise InvalidPayload(
            f"'{user.two_factor_method}' two-factor authentication is already enabled",
            code="two_factor_already_enabled",
        )
    method, code = req.two_factor_auth_method, req.two_factor_auth_code
    now = datetime.now(UTC)
    pending = (
        await UserKey.filter(user_id=user.id, purpose=SETUP, used_at=None, expires_at__gt=now).order_by("-id").first()
    )
    if pending is None or pending.data.get("method") != method:
        raise InvalidPayload(
            f"no pending '{method}' setup (or it expired): POST /users/{user.id}/two_factor/setup first",
            code="no_pending_setup",
        )
    async with ctx.limiter.guard("two_factor", account=user.username, address=address) as attempt:
        step = 0
        if method == "app":
            secret = pending.data.get("secret", "")
            found = totp_step(secret, code)
            # The pending row is used once: of two concurrent verifies one enables.
            ok = found is not None and bool(await UserKey.filter(id=pending.id, used_at=None).update(used_at=now))
            step = found or 0
            config: dict[str, str] = {}
        else:
            secret = ""
            try:
                row = await _take_code(user, code, SETUP, method)
            except Gone:
                raise InvalidPayload("this code has expired: start the setup again", code="code_expired") from None
            ok = row is not None
            config = {"phone_number": row.data["phone_number"]} if row is not None and method == "sms" else {}
        if not ok:
            attempt.fail()
            raise InvalidPayload("the two-factor authentication code is not valid", code="invalid_code")
    await User.filter(id=user.id).update(
        two_factor_method=method, two_factor_config=config, two_factor_secret=secret, two_factor_last_step=step
    )
    await user_keys.void(str(user.id), CODE, SETUP)
    return {"detail": "Two-Factor Authentication was enabled successfully."}


async def details(principal: Principal, user_id: str) -> dict[str, object]:
    user = await _target(principal, user_id, admin_may=True)
    if not user.two_factor_method:
        raise InvalidPayload("two-factor authentication is not enabled", code="two_factor_not_enabled")
    return {"two_factor_auth_method": user.two_factor_method, "config": dict(user.two_factor_config or {})}


async def disable(
    ctx: Context, principal: Principal, user_id: str, req: DisableRequest, *, address: str = ""
) -> dict[str, object]:
    """Turn 2FA off with a current code (an email/sms user without one is sent one: 400
    `two_factor_code_sent`). A gooee admin disables another user's without a code."""
    user = await _target(principal, user_id, admin_may=True)
    method = user.two_factor_method
    if not method:
        raise InvalidPayload("two-factor authentication is not enabled", code="two_factor_not_enabled")
    if str(user.id) == principal.user_id:
        code = req.two_factor_auth_code
        if not code:
            if method == "app":
                raise InvalidPayload(
                    "two_factor_auth_code is required: a current code from the authenticator app",
                    code="two_factor_code_required",
                )
            await send_code(ctx, user, method, CODE, user.two_factor_config.get("phone_number", ""))
            raise InvalidPayload(
                f"a code was sent by {method}: send it as two_factor_auth_code", code="two_factor_code_sent"
            )
        async with ctx.limiter.guard("two_factor", account=user.username, address=address) as attempt:
            try:
                ok = await _current_code_ok(user, code)
            except Gone:
                raise InvalidPayload("this code has expired: ask for a new one", code="code_expired") from None
            if not ok:
                attempt.fail()
                raise InvalidPayload("the two-factor authentication code is not valid", code="invalid_code")
    await User.filter(id=user.id).update(
        two_factor_method=None, two_factor_config={}, two_factor_secret="", two_factor_last_step=0
    )
    await user_keys.void(str(user.id), CODE, SETUP)
    return {"detail": f"'{method}' two-factor authentication has been disabled on your account"}


# --- login ----------------------------------------------------------------------------------------------


async def check_login(ctx: Context, user: User, code: str | None, *, address: str, login: Attempt) -> None:
    """The second step of a login of a user with 2FA enabled, after a correct password.

    No code: 401 `two_factor_required` naming the method (email/sms: a fresh code is sent).
    A wrong or replayed code: 401 `invalid_two_factor_code`, a failure for the `two_factor` flow
    and for the login (`login` is that attempt)."""
    method = user.two_factor_method or ""
    if not code:
        if method in ("email", "sms"):
            await send_code(ctx, user, method, CODE, user.two_factor_config.get("phone_number", ""))
            detail = f"two-factor authentication required: send the code sent by {method} as two_factor_auth_code"
        else:
            detail = "two-factor authentication required: send the app's current code as two_factor_auth_code"
        raise Unauthorized(detail, code="two_factor_required", extra={"method": method})
    async with ctx.limiter.guard("two_factor", account=user.username, address=address) as attempt:
        try:
            ok = await _current_code_ok(user, code)
        except Gone:
            raise Unauthorized(
                "this two-factor code has expired: log in without a code to get a new one",
                code="two_factor_code_expired",
                extra={"method": method},
            ) from None
        if not ok:
            attempt.fail()
            login.fail()
            raise Unauthorized("invalid two-factor authentication code", code="invalid_two_factor_code")
