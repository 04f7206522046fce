"""What the mailed-key flows (registration, password reset, email change) share: finding a key
without using it up, errors that name the field, the new-password check, and what a changed
password or username does to the user's sessions."""

from __future__ import annotations

from datetime import UTC, datetime

from handlers import user_keys
from handlers.accounts import check_password_rules
from handlers.errors import Gone, InvalidPayload
from handlers.user_rules import field_error
from models.accounts import RefreshToken, UserKey


def invalid_key(field: str, what: str) -> InvalidPayload:
    return field_error(InvalidPayload, field, f"this {what} is not valid (unknown or already used)", "invalid_key")


def expired_key(field: str, what: str) -> Gone:
    message = f"this {what} has expired"
    return Gone(message, code="key_expired", errors=[{"field": field, "message": message}])


async def peek(purpose: str, key: str) -> UserKey | None:
    """The unused key row for a mailed (long) key, found by its digest; nothing is used up.
    Whoever acts on it takes it with `user_keys.take` (one-time under concurrency)."""
    row = await UserKey.get_or_none(key_hash=user_keys._digest(purpose, key, None), purpose=purpose)
    return row if row is not None and row.used_at is None else None


def is_expired(row: UserKey) -> bool:
    return row.expires_at <= datetime.now(UTC)


def check_new_password(password: str, confirm: str) -> None:
    """400 `password_mismatch` naming `password_confirm`, then 400 `weak_password` naming `password`
    with every rule it breaks (spec/users.rst, Complex Constraints)."""
    if password != confirm:
        message = "password_confirm does not match password"
        raise field_error(InvalidPayload, "password_confirm", message, "password_mismatch")
    try:
        check_password_rules(password)
    except InvalidPayload as exc:
        raise field_error(InvalidPayload, "password", exc.detail, exc.code) from None


async def end_sessions(user_id: str) -> None:
    """After a password or username change: the user's refresh tokens stop working, and so do the
    password-reset links mailed before it."""
    now = datetime.now(UTC)
    await RefreshToken.filter(user_id=user_id, revoked_at=None).update(revoked_at=now)
    await user_keys.void(user_id, "password_reset")
