"""Accounts enough to own devices: create, log in, refresh, log out, who am I."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from tortoise.exceptions import IntegrityError

from handlers import two_factor
from handlers.context import Context
from handlers.errors import Conflict, InvalidPayload, Unauthorized
from handlers.principal import Principal
from handlers.secrets import (
    decode_access_token,
    digest,
    hash_password,
    issue_access_token,
    new_secret,
    verify_password,
)
from handlers.tenancy import principal_of
from handlers.views import View
from models.accounts import ACCOUNT_TYPES, RefreshToken, User


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    two_factor_auth_code: str | None = Field(
        None,
        pattern=two_factor.CODE_PATTERN,
        description="users with two-factor authentication: the app's current code, or the code sent by "
        "email/SMS after a login without one answered 401 `two_factor_required`",
    )


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=200)


class Tokens(View):
    access_token: str = Field(description="JWT; send as Authorization: Bearer <access_token>")
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds until the access token expires")
    refresh_token: str = Field(description="single use: POST /auth/refresh answers new tokens")


PASSWORD_SPECIALS = "!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~"


def check_password_rules(password: str) -> None:
    """spec/users.rst: at least 8 characters, a lowercase letter, an uppercase letter, a number, and
    nothing but letters, digits and the listed special characters. The error names each rule broken."""
    problems = []
    if len(password) < 8:
        problems.append("be at least 8 characters long")
    if not any(c.islower() for c in password):
        problems.append("include a lowercase letter")
    if not any(c.isupper() for c in password):
        problems.append("include an uppercase letter")
    if not any(c.isdigit() for c in password):
        problems.append("include a number")
    odd = sorted({c for c in password if not (c.isascii() and c.isalnum()) and c not in PASSWORD_SPECIALS})
    if odd:
        problems.append(f"use only letters, digits and {PASSWORD_SPECIALS} (not {''.join(odd)!r})")
    if problems:
        raise InvalidPayload("password must " + "; ".join(problems), code="weak_password")


async def create_user(username: str, password: str, account_type: str, *, active: bool = True) -> User:
    """Create a user (the CLI's first administrator, later the users API)."""
    if account_type not in ACCOUNT_TYPES:
        raise InvalidPayload(f"account_type must be one of {', '.join(ACCOUNT_TYPES)}")
    check_password_rules(password)
    try:
        return await User.create(
            username=username,
            password_hash=await hash_password(password),
            account_type=account_type,
            account_status="active" if active else "pending",
            account_status_updated=datetime.now(UTC),
        )
    except IntegrityError as exc:
        raise Conflict(f"user {username!r} already exists", code="duplicate_username") from exc


async def _issue_tokens(ctx: Context, user: User) -> dict[str, object]:
    access, expires_in = issue_access_token(
        ctx.jwt_secret, str(user.id), ctx.access_token_minutes, account_type=user.account_type
    )
    refresh = new_secret()
    await RefreshToken.create(
        user=user,
        token_hash=digest(refresh),
        expires_at=datetime.now(UTC) + timedelta(days=ctx.refresh_token_days),
    )
    return {
        "access_token": access,
        "token_type": "bearer",
        "expires_in": expires_in,
        "refresh_token": refresh,
    }


async def login(ctx: Context, req: LoginRequest, *, address: str = "") -> dict[str, object]:
    # Abuse limits (docs/security.md): a locked account or a spent budget is refused before any
    # work; failures count alike whether or not the user exists.
    async with ctx.limiter.guard("login", account=req.username, address=address) as attempt:
        user = await User.get_or_none(username=req.username)
        ok = await verify_password(req.password, user.password_hash if user else "")
        if not user or not ok:
            attempt.fail()
            raise Unauthorized("invalid username or password", code="invalid_credentials")
        if user.account_status not in ("active", "transfer"):  # transfer: the old username works until verified
            raise Unauthorized(f"account is {user.account_status}", code="account_not_active")
        if user.two_factor_method:  # the second step; a wrong code is a failed login too
            await two_factor.check_login(ctx, user, req.two_factor_auth_code, address=address, login=attempt)
    user.last_login = datetime.now(UTC)
    await User.filter(id=user.id).update(last_login=user.last_login)
    return await _issue_tokens(ctx, user)


async def refresh(ctx: Context, req: RefreshRequest) -> dict[str, object]:
    """Exchange a refresh token for new tokens; the old refresh token is used up (rotation)."""
    token = await RefreshToken.get_or_none(token_hash=digest(req.refresh_token)).select_related("user")
    now = datetime.now(UTC)
    if token is None or token.revoked_at is not None or token.expires_at <= now:
        raise Unauthorized("invalid or expired refresh token", code="refresh_invalid")
    # Conditional update: of two concurrent refreshes with one token, exactly one wins.
    won = await RefreshToken.filter(id=token.id, revoked_at=None).update(revoked_at=now)
    if not won:
        raise Unauthorized("invalid or expired refresh token", code="refresh_invalid")
    if token.user.account_status not in ("active", "transfer"):
        raise Unauthorized(f"account is {token.user.account_status}", code="account_not_active")
    return await _issue_tokens(ctx, token.user)


async def logout(ctx: Context, principal: Principal, req: RefreshRequest) -> None:
    """Revoke the caller's refresh token; their access tokens are checked afresh from now on
    (each stays valid until it expires, as JWTs do)."""
    await RefreshToken.filter(token_hash=digest(req.refresh_token), user_id=principal.user_id, revoked_at=None).update(
        revoked_at=datetime.now(UTC)
    )
    forget_principal(ctx, principal.user_id)


PRINCIPAL_TTL = 10.0  # seconds an authenticated token is trusted without checking it again


async def authenticate_jwt(ctx: Context, token: str) -> Principal:
    """The user behind an access token, who must still be active.

    A token that checked out is remembered for PRINCIPAL_TTL seconds (never past its expiry):
    verifying the signature and reading the user were most of a short request's cost.
    Whatever changes a user's status calls `forget_principal`.
    """
    now = time.monotonic()
    known = ctx.principals.get(token)
    if known is not None and known[1] > now:
        return known[0]
    claims = decode_access_token(ctx.jwt_secret, token)
    try:  # PostgreSQL's uuid column refuses a malformed id outright (SQLite just finds nothing)
        user_id = uuid.UUID(str(claims.get("sub")))
    except ValueError:
        user_id = None
    user = await User.get_or_none(id=user_id) if user_id else None
    if user is None or user.account_status not in ("active", "transfer"):
        raise Unauthorized("user no longer active", code="account_not_active")
    principal = await principal_of(user)
    if len(ctx.principals) > 10_000:
        ctx.principals.clear()
    until = min(now + PRINCIPAL_TTL, now + float(claims["exp"]) - time.time())
    ctx.principals[token] = (principal, until)
    return principal


def forget_principal(ctx: Context, user_id: str) -> None:
    """Call when a user's status, type or existence changes: their tokens are checked afresh."""
    for token, (principal, _) in list(ctx.principals.items()):
        if principal.user_id == user_id:
            del ctx.principals[token]
