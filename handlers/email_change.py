"""Completing a username (email) change: POST /users/update_email with the key mailed to the new
address (spec/users.rst, Username Change Process).

The change is started by PATCH/PUT /users/(id)/ (handlers/users.py), which leaves the user in status
`transfer` with `pending_username` set and mails a key issued as
`user_keys.issue(user, "email_change", ttl, {"username": new, "status": previous_status})`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers import user_keys
from handlers.accounts import forget_principal
from handlers.context import Context
from handlers.errors import Conflict, Gone, InvalidPayload
from handlers.mailed_keys import end_sessions, expired_key, invalid_key, is_expired, peek
from models.accounts import ACCOUNT_STATUSES, User, UserKey

PURPOSE = "email_change"
KEY_FIELD = "activation_key"
WHAT = "email change key"


class UpdateEmailRequest(BaseModel):
    activation_key: str = Field(min_length=1, max_length=200, description="the key mailed to the new address")


def _status_after(data: dict[str, object]) -> str:
    status = data.get("status")
    return status if isinstance(status, str) and status in ACCOUNT_STATUSES and status != "transfer" else "active"


def _taken(username: str) -> Conflict:
    message = f"username {username!r} is already taken"
    return Conflict(message, code="duplicate_username", errors=[{"field": "username", "message": message}])


async def _abandon(row: UserKey) -> None:
    """The key ran out: the change is dropped and the user is back to the status they had."""
    now = datetime.now(UTC)
    await User.filter(
        id=row.user_id,  # type: ignore[attr-defined]
        account_status="transfer",
        pending_username=row.data.get("username"),
    ).update(pending_username=None, account_status=_status_after(row.data), account_status_updated=now, modified=now)


async def update_email(ctx: Context, req: UpdateEmailRequest, *, address: str = "") -> dict[str, str]:
    """Make the pending username the user's username: 400 `invalid_key`, 410 `key_expired` (the change is
    dropped), 409 `duplicate_username` if someone took the name meanwhile (the key stays usable)."""
    await ctx.limiter.attempt("activation", account=req.activation_key, address=address)
    row = await peek(PURPOSE, req.activation_key)
    if row is None:
        raise invalid_key(KEY_FIELD, WHAT)
    if is_expired(row):
        await _abandon(row)
        raise expired_key(KEY_FIELD, WHAT)
    new = row.data.get("username")
    user_id = str(row.user_id)  # type: ignore[attr-defined]
    try:
        async with in_transaction():
            await user_keys.take(PURPOSE, req.activation_key, what=WHAT)
            user = await User.get(id=user_id)
            if not isinstance(new, str) or not new or user.pending_username != new:  # the change was cancelled
                raise invalid_key(KEY_FIELD, WHAT)
            if await User.filter(username=new).exclude(id=user_id).exists():
                raise _taken(new)
            user.username = new
            user.pending_username = None
            user.account_status = _status_after(row.data)
            user.account_status_updated = datetime.now(UTC)
            await user.save()
            await end_sessions(user_id)
    except IntegrityError:  # taken by a concurrent create between the check and the update
        raise _taken(str(new)) from None
    except Gone:
        raise expired_key(KEY_FIELD, WHAT) from None
    except InvalidPayload as exc:
        if exc.errors:
            raise
        raise invalid_key(KEY_FIELD, WHAT) from None
    forget_principal(ctx, user_id)
    return {"detail": f"Username changed to {new}. Log in with it from now on."}
