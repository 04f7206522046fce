"""Two-factor rules against a real database: TOTP steps, request models, expired codes, the login's
second step and its failure counting (the HTTP flows are in tests/integration/test_two_factor.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pyotp
import pytest
from pydantic import ValidationError

from handlers import accounts, two_factor
from handlers.accounts import LoginRequest
from handlers.context import Context, UserPolicy
from handlers.errors import InvalidPayload, RateLimited, Unauthorized
from handlers.ratelimit import Budget, RateLimiter
from handlers.telemetry_writer import TelemetryWriter
from handlers.tenancy import principal_of
from handlers.two_factor import DisableRequest, SetupRequest, VerifyRequest
from models.accounts import User
from models.db import close_db, init_db
from models.outbox import OutboxMessage

PASSWORD = "Passw0rd!x"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
async def ctx(db_url: str) -> AsyncIterator[Context]:
    db = await init_db(db_url)
    try:
        limiter = RateLimiter({"login": Budget("", "5 per 15 minutes"), "two_factor": Budget("", "5 per 15 minutes")})
        yield Context(jwt_secret="x" * 32, writer=TelemetryWriter(), limiter=limiter)
    finally:
        await close_db(db)


def test_totp_step_accepts_one_step_either_way() -> None:
    totp = pyotp.TOTP(SECRET)
    now = 1_700_000_015.0  # mid-step
    step = totp.timecode(now)
    for offset in (-1, 0, 1):
        assert two_factor.totp_step(SECRET, totp.generate_otp(step + offset), now) == step + offset
    for offset in (-3, -2, 2, 3):
        code = totp.generate_otp(step + offset)
        if code not in {totp.generate_otp(step + o) for o in (-1, 0, 1)}:
            assert two_factor.totp_step(SECRET, code, now) is None
    assert two_factor.totp_step(SECRET, totp.generate_otp(step), now + 30) == step  # now one step behind
    assert two_factor.totp_step(SECRET, totp.generate_otp(step), now + 60) is None


@pytest.mark.parametrize(
    "body",
    [
        {"two_factor_auth_method": "sms"},
        {"two_factor_auth_method": "sms", "phone_number": "555-0111"},
        {"two_factor_auth_method": "sms", "phone_number": "+1 (202) 555-01a1"},
        {"two_factor_auth_method": "sms", "phone_number": "+12345"},
        {"two_factor_auth_method": "email", "phone_number": "+" + "1" * 20},
        {"two_factor_auth_method": "totp"},
    ],
)
def test_setup_request_refuses(body: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        SetupRequest.model_validate(body)


def test_setup_request_phone_formats() -> None:
    for phone in ("+1-202-555-0111", "+1 8131234567", "+44 (20) 7946.0958", "+4915112345678"):
        assert (
            SetupRequest.model_validate({"two_factor_auth_method": "sms", "phone_number": phone}).phone_number == phone
        )
    assert two_factor.e164("+1 (202) 555-0111") == "+12025550111"
    with pytest.raises(ValidationError):
        VerifyRequest.model_validate({"two_factor_auth_code": "12 456", "two_factor_auth_method": "app"})
    assert DisableRequest.model_validate({}).two_factor_auth_code is None


async def _user(name: str = "tf@example.com") -> User:
    return await accounts.create_user(name, PASSWORD, "customer")


async def _last_code(to: str) -> str:
    message = await OutboxMessage.filter(recipient=to).order_by("-id").first()
    assert message is not None
    return message.body.split("code is ")[1][:6]


async def test_expired_codes(ctx: Context) -> None:
    user = await _user()
    me = await principal_of(user)
    stale = replace(ctx, users=UserPolicy(two_factor_code_minutes=-1))  # every code is born expired
    await two_factor.setup(stale, me, str(user.id), SetupRequest(two_factor_auth_method="email"))
    with pytest.raises(InvalidPayload) as caught:
        await two_factor.verify(
            ctx, me, str(user.id), VerifyRequest(two_factor_auth_code="123456", two_factor_auth_method="email")
        )
    assert caught.value.code == "no_pending_setup"  # an expired setup is no setup

    await two_factor.setup(ctx, me, str(user.id), SetupRequest(two_factor_auth_method="email"))
    code = await _last_code(user.username)
    await two_factor.verify(
        ctx, me, str(user.id), VerifyRequest(two_factor_auth_code=code, two_factor_auth_method="email")
    )
    with pytest.raises(Unauthorized) as denied:
        await accounts.login(stale, LoginRequest(username=user.username, password=PASSWORD))
    assert (denied.value.code, denied.value.body()["method"]) == ("two_factor_required", "email")
    code = await _last_code(user.username)
    with pytest.raises(Unauthorized) as denied:
        await accounts.login(ctx, LoginRequest(username=user.username, password=PASSWORD, two_factor_auth_code=code))
    assert denied.value.code == "two_factor_code_expired"
    with pytest.raises(InvalidPayload) as refused:
        await two_factor.disable(stale, me, str(user.id), DisableRequest())
    assert refused.value.code == "two_factor_code_sent"
    with pytest.raises(InvalidPayload) as refused:
        await two_factor.disable(
            ctx, me, str(user.id), DisableRequest(two_factor_auth_code=await _last_code(user.username))
        )
    assert refused.value.code == "code_expired"
    assert (await User.get(id=user.id)).two_factor_method == "email"


async def test_wrong_login_codes_count_for_both_flows(ctx: Context) -> None:
    user = await _user()
    me = await principal_of(user)
    await two_factor.setup(
        ctx, me, str(user.id), SetupRequest(two_factor_auth_method="sms", phone_number="+1 202 555 0199")
    )
    code = await _last_code("+12025550199")
    await two_factor.verify(
        ctx, me, str(user.id), VerifyRequest(two_factor_auth_code=code, two_factor_auth_method="sms")
    )
    stored = await User.get(id=user.id)
    assert (stored.two_factor_method, stored.two_factor_config, stored.two_factor_secret) == (
        "sms",
        {"phone_number": "+1 202 555 0199"},
        "",
    )
    with pytest.raises(Unauthorized):
        await accounts.login(ctx, LoginRequest(username=user.username, password=PASSWORD))
    good = await _last_code("+12025550199")
    wrong = "000000" if good != "000000" else "111111"
    for _ in range(5):
        with pytest.raises(Unauthorized) as denied:
            await accounts.login(
                ctx, LoginRequest(username=user.username, password=PASSWORD, two_factor_auth_code=wrong)
            )
        assert denied.value.code == "invalid_two_factor_code"
    with pytest.raises(RateLimited):
        await ctx.limiter.check("login", account=user.username)
    with pytest.raises(RateLimited):
        await ctx.limiter.check("two_factor", account=user.username)
    assert (await User.get(id=user.id)).last_login is None


async def test_login_with_code_sets_last_login_and_a_login_code_cannot_verify_a_setup(ctx: Context) -> None:
    user = await _user()
    me = await principal_of(user)
    await two_factor.setup(ctx, me, str(user.id), SetupRequest(two_factor_auth_method="email"))
    await two_factor.verify(
        ctx,
        me,
        str(user.id),
        VerifyRequest(two_factor_auth_code=await _last_code(user.username), two_factor_auth_method="email"),
    )
    with pytest.raises(Unauthorized):
        await accounts.login(ctx, LoginRequest(username=user.username, password=PASSWORD))
    code = await _last_code(user.username)
    tokens = await accounts.login(
        ctx, LoginRequest(username=user.username, password=PASSWORD, two_factor_auth_code=code)
    )
    assert tokens["access_token"]
    assert (await User.get(id=user.id)).last_login is not None
    # After disabling, a fresh setup is needed: the old login code does not verify anything.
    admin = await principal_of(await accounts.create_user("root@example.com", PASSWORD, "gooee"))
    await two_factor.disable(ctx, admin, str(user.id), DisableRequest())
    with pytest.raises(InvalidPayload) as caught:
        await two_factor.verify(
            ctx, me, str(user.id), VerifyRequest(two_factor_auth_code=code, two_factor_auth_method="email")
        )
    assert caught.value.code == "no_pending_setup"


async def test_codes_sent_are_bounded_per_account_and_a_repeated_code_does_not_collide(ctx: Context) -> None:
    limited = replace(ctx, limiter=RateLimiter({"two_factor_send": Budget("", "3 per hour")}))
    user = await _user("sender@example.com")
    other = await _user("other-sender@example.com")
    for _ in range(3):
        await two_factor.send_code(limited, user, "email", two_factor.CODE)
    with pytest.raises(RateLimited):
        await two_factor.send_code(limited, user, "email", two_factor.CODE)
    await two_factor.send_code(limited, other, "email", two_factor.CODE)  # others are not limited
    assert await OutboxMessage.filter(recipient="sender@example.com").count() == 3
    # A new code replaces the earlier rows: issuing the same digits again cannot hit the unique digest.
    for _ in range(30):
        await two_factor.send_code(ctx, user, "email", two_factor.CODE)
    assert await user.keys.filter(purpose=two_factor.CODE).count() == 1
