"""One-time keys mailed to users: activation, email change, password reset, 2FA codes.

Stored as a digest; a key is used up by one conditional update, so of two concurrent requests
with one key exactly one gets it. A short code (2FA) is only meaningful with its user, so its
digest includes the user's id; a long key (a link) is found by itself.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers.errors import Gone, InvalidPayload
from handlers.secrets import digest, new_secret
from models.accounts import User, UserKey


def _digest(purpose: str, key: str, user_id: str | None) -> str:
    return digest(f"{purpose}:{user_id or ''}:{key}")


async def issue(
    user: User, purpose: str, ttl: timedelta, data: dict[str, Any] | None = None, *, code: bool = False
) -> str:
    """A new key for `user` (a 6-digit code with `code=True`); their earlier unused keys for the same
    purpose stop working."""
    now = datetime.now(UTC)
    if code:
        # A code's digest is unique per user and purpose, and one in a million repeats an earlier
        # code: the earlier rows go, so a repeat neither collides nor brings an old code back.
        await UserKey.filter(user_id=user.id, purpose=purpose).delete()
    else:
        await UserKey.filter(user_id=user.id, purpose=purpose, used_at=None).update(used_at=now)
    key = f"{secrets.randbelow(10**6):06d}" if code else new_secret(20)
    await UserKey.create(
        user=user,
        purpose=purpose,
        key_hash=_digest(purpose, key, str(user.id) if code else None),
        data=data or {},
        expires_at=now + ttl,
    )
    return key


async def take(purpose: str, key: str, *, user_id: str | None = None, what: str = "key") -> UserKey:
    """Use up a key: 400 `invalid_key` if unknown or used, 410 `key_expired` if too old. Pass the
    user's id for codes (keys issued with `code=True`)."""
    now = datetime.now(UTC)
    row = await UserKey.get_or_none(key_hash=_digest(purpose, key, user_id), purpose=purpose)
    if row is None or row.used_at is not None:
        raise InvalidPayload(f"this {what} is not valid (unknown or already used)", code="invalid_key")
    if row.expires_at <= now:
        raise Gone(f"this {what} has expired", code="key_expired")
    if not await UserKey.filter(id=row.id, used_at=None).update(used_at=now):
        raise InvalidPayload(f"this {what} is not valid (unknown or already used)", code="invalid_key")
    return row


async def void(user_id: str, *purposes: str) -> None:
    """Every unused key of these purposes for the user stops working."""
    await UserKey.filter(user_id=user_id, purpose__in=purposes, used_at=None).update(used_at=datetime.now(UTC))


async def issue_lookup_code(user: User, purpose: str, ttl: timedelta, attempts: int = 20) -> str:
    """A 6-digit key found by itself (no user to go with it, unlike a 2FA code): unique among the
    live keys of `purpose`. A used or expired row with the same digest makes way; a live one means
    another code is drawn. The user's earlier keys for the purpose stop working."""
    now = datetime.now(UTC)
    await UserKey.filter(user_id=user.id, purpose=purpose, used_at=None).update(used_at=now)
    for _ in range(attempts):
        key = f"{secrets.randbelow(10**6):06d}"
        key_hash = _digest(purpose, key, None)
        old = await UserKey.get_or_none(key_hash=key_hash)
        if old is not None:
            if old.used_at is None and old.expires_at > now:
                continue
            await UserKey.filter(id=old.id).delete()
        try:
            async with in_transaction():  # a savepoint inside the caller's transaction: PostgreSQL
                # aborts a whole transaction on an error, and the loop must go on after one
                await UserKey.create(user=user, purpose=purpose, key_hash=key_hash, expires_at=now + ttl)
        except IntegrityError:  # drawn by a concurrent request at the same moment
            continue
        return key
    raise RuntimeError(f"no free {purpose} code after {attempts} draws")
