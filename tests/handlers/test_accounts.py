"""Accounts against an in-memory database: users, login, refresh rotation, logout, JWT auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from handlers import accounts
from handlers.accounts import LoginRequest, RefreshRequest
from handlers.context import Context
from handlers.errors import Conflict, InvalidPayload, Unauthorized
from handlers.telemetry_writer import TelemetryWriter
from handlers.users import get_user
from models.accounts import RefreshToken, User
from models.db import close_db, init_db

PASSWORD = "Passw0rd!x"


@pytest.fixture
async def ctx(db_url: str) -> AsyncIterator[Context]:
    db = await init_db(db_url)
    try:
        yield Context(jwt_secret="x" * 32, writer=TelemetryWriter())
    finally:
        await close_db(db)


async def _login(ctx: Context, username: str = "alice@example.com", password: str = PASSWORD) -> dict[str, object]:
    return await accounts.login(ctx, LoginRequest(username=username, password=password))


async def _unauthorized(coro: object, code: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        await coro  # type: ignore[misc]
    assert caught.value.status == 401
    assert caught.value.code == code


async def test_create_user(ctx: Context) -> None:
    user = await accounts.create_user("alice@example.com", PASSWORD, "customer")
    stored = await User.get(id=user.id)
    assert stored.username == "alice@example.com"
    assert stored.account_type == "customer"
    assert stored.account_status == "active"
    assert stored.password_hash.startswith("$argon2") and PASSWORD not in stored.password_hash
    pending = await accounts.create_user("p@example.com", PASSWORD, "partner", active=False)
    assert pending.account_status == "pending"


@pytest.mark.parametrize(
    ("password", "missing"),
    [
        ("Sh0rt!", "at least 8 characters"),
        ("PASSW0RD!X", "a lowercase letter"),
        ("passw0rd!x", "an uppercase letter"),
        ("Password!x", "a number"),
        ("", "at least 8 characters"),
    ],
)
async def test_create_user_password_rules(ctx: Context, password: str, missing: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        await accounts.create_user("alice@example.com", password, "customer")
    assert caught.value.code == "weak_password"
    assert missing in caught.value.detail
    assert await User.all().count() == 0


async def test_create_user_unknown_account_type(ctx: Context) -> None:
    with pytest.raises(InvalidPayload):
        await accounts.create_user("alice@example.com", PASSWORD, "superuser")
    assert await User.all().count() == 0


async def test_create_user_duplicate(ctx: Context) -> None:
    await accounts.create_user("alice@example.com", PASSWORD, "customer")
    with pytest.raises(Conflict) as caught:
        await accounts.create_user("alice@example.com", PASSWORD, "gooee")
    assert caught.value.status == 409
    assert caught.value.code == "duplicate_username"
    assert await User.all().count() == 1


async def test_login_issues_tokens(ctx: Context) -> None:
    user = await accounts.create_user("alice@example.com", PASSWORD, "customer")
    tokens = await _login(ctx)
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 15 * 60
    who = await accounts.authenticate_jwt(ctx, str(tokens["access_token"]))
    assert who == accounts.Principal(str(user.id), "alice@example.com", "customer")
    assert not who.is_admin
    # The refresh token is stored as a digest only.
    row = await RefreshToken.get(user_id=user.id)
    assert row.token_hash != tokens["refresh_token"]
    assert len(row.token_hash) == 64
    me = await get_user(who, who.user_id)
    assert me["username"] == "alice@example.com" and "password_hash" not in me


async def test_login_wrong_password_and_unknown_user_look_alike(ctx: Context) -> None:
    await accounts.create_user("alice@example.com", PASSWORD, "customer")
    await _unauthorized(_login(ctx, password="Passw0rd!y"), "invalid_credentials")
    await _unauthorized(_login(ctx, username="nobody@example.com"), "invalid_credentials")


async def test_login_inactive_account(ctx: Context) -> None:
    await accounts.create_user("alice@example.com", PASSWORD, "customer", active=False)
    await _unauthorized(_login(ctx), "account_not_active")
    # ... but a wrong password still says only "invalid credentials".
    await _unauthorized(_login(ctx, password="Passw0rd!y"), "invalid_credentials")


async def test_admin_principal(ctx: Context) -> None:
    await accounts.create_user("admin@example.com", PASSWORD, "gooee")
    tokens = await _login(ctx, "admin@example.com")
    assert (await accounts.authenticate_jwt(ctx, str(tokens["access_token"]))).is_admin


async def test_refresh_rotates(ctx: Context) -> None:
    await accounts.create_user("alice@example.com", PASSWORD, "customer")
    first = await _login(ctx)
    second = await accounts.refresh(ctx, RefreshRequest(refresh_token=str(first["refresh_token"])))
    assert second["refresh_token"] != first["refresh_token"]
    await accounts.authenticate_jwt(ctx, str(second["access_token"]))
    # The used refresh token is spent; the new one works once.
    await _unauthorized(
        accounts.refresh(ctx, RefreshRequest(refresh_token=str(first["refresh_token"]))), "refresh_invalid"
    )
    await accounts.refresh(ctx, RefreshRequest(refresh_token=str(second["refresh_token"])))


async def test_refresh_race_one_wins(ctx: Context) -> None:
    await accounts.create_user("alice@example.com", PASSWORD, "customer")
    tokens = await _login(ctx)
    req = RefreshRequest(refresh_token=str(tokens["refresh_token"]))
    results = await asyncio.gather(*(accounts.refresh(ctx, req) for _ in range(5)), return_exceptions=True)
    wins = [r for r in results if isinstance(r, dict)]
    losses = [r for r in results if isinstance(r, Unauthorized)]
    assert len(wins) == 1, results
    assert len(losses) == 4, results
    assert {e.code for e in losses} == {"refresh_invalid"}


async def test_refresh_unknown_or_expired(ctx: Context) -> None:
    user = await accounts.create_user("alice@example.com", PASSWORD, "customer")
    await _unauthorized(accounts.refresh(ctx, RefreshRequest(refresh_token="nope")), "refresh_invalid")
    tokens = await _login(ctx)
    await RefreshToken.filter(user_id=user.id).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await _unauthorized(
        accounts.refresh(ctx, RefreshRequest(refresh_token=str(tokens["refresh_token"]))), "refresh_invalid"
    )


async def test_refresh_refused_for_deactivated_user(ctx: Context) -> None:
    user = await accounts.create_user("alice@example.com", PASSWORD, "customer")
    tokens = await _login(ctx)
    await User.filter(id=user.id).update(account_status="inactive")
    await _unauthorized(
        accounts.refresh(ctx, RefreshRequest(refresh_token=str(tokens["refresh_token"]))), "account_not_active"
    )
    await _unauthorized(accounts.authenticate_jwt(ctx, str(tokens["access_token"])), "account_not_active")


async def test_logout_revokes_refresh_token(ctx: Context) -> None:
    await accounts.create_user("alice@example.com", PASSWORD, "customer")
    keep = await _login(ctx)
    gone = await _login(ctx)
    who = await accounts.authenticate_jwt(ctx, str(gone["access_token"]))
    assert ctx.principals  # the verified token is remembered ...
    await accounts.logout(ctx, who, RefreshRequest(refresh_token=str(gone["refresh_token"])))
    assert not ctx.principals  # ... and forgotten at logout
    await _unauthorized(
        accounts.refresh(ctx, RefreshRequest(refresh_token=str(gone["refresh_token"]))), "refresh_invalid"
    )
    # Only that session ends; logging out twice or with an unknown token is harmless.
    await accounts.refresh(ctx, RefreshRequest(refresh_token=str(keep["refresh_token"])))
    await accounts.logout(ctx, who, RefreshRequest(refresh_token=str(gone["refresh_token"])))
    await accounts.logout(ctx, who, RefreshRequest(refresh_token="unknown"))


async def test_logout_cannot_revoke_another_users_refresh_token(ctx: Context) -> None:
    await accounts.create_user("alice@example.com", PASSWORD, "customer")
    await accounts.create_user("bob@example.com", PASSWORD, "customer")
    alice = await _login(ctx)
    bob = await accounts.login(ctx, LoginRequest(username="bob@example.com", password=PASSWORD))
    who_bob = await accounts.authenticate_jwt(ctx, str(bob["access_token"]))
    await accounts.logout(ctx, who_bob, RefreshRequest(refresh_token=str(alice["refresh_token"])))
    await accounts.refresh(ctx, RefreshRequest(refresh_token=str(alice["refresh_token"])))  # still valid


async def test_authenticate_jwt_deleted_user(ctx: Context) -> None:
    user = await accounts.create_user("alice@example.com", PASSWORD, "customer")
    tokens = await _login(ctx)
    await user.delete()
    await _unauthorized(accounts.authenticate_jwt(ctx, str(tokens["access_token"])), "account_not_active")


async def test_authenticate_jwt_other_secret(ctx: Context) -> None:
    await accounts.create_user("alice@example.com", PASSWORD, "customer")
    tokens = await _login(ctx)
    other = Context(jwt_secret="y" * 32, writer=ctx.writer)
    await _unauthorized(accounts.authenticate_jwt(other, str(tokens["access_token"])), "token_invalid")
