"""Registration: a pending user finishes their account with the activation key from their invitation
(spec/users.rst, Registering a User)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints
from tortoise.transactions import in_transaction

from handlers import user_keys
from handlers.accounts import forget_principal
from handlers.avatars import decode_avatar
from handlers.context import Context
from handlers.errors import Gone, InvalidPayload
from handlers.mailed_keys import check_new_password, end_sessions, expired_key, invalid_key, is_expired, peek
from handlers.secrets import hash_password
from handlers.views import View
from models.accounts import User

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=30)]
KEY_FIELD = "activation_key"
WHAT = "activation key"


class RegisterRequest(BaseModel):
    activation_key: str = Field(min_length=1, max_length=200, description="the key from the invitation mail")
    first_name: Name
    last_name: Name
    phone_number: str | None = Field(None, max_length=20)
    avatar: str | None = Field(None, description="base64 PNG, JPEG or WebP image (a data: URL too), at most 1 MiB")
    password: str = Field(max_length=128, description="see the password rules (docs/users.md)")
    password_confirm: str = Field(max_length=128)


class Detail(View):
    detail: str


REGISTERED = "User registered successfully. You can login now."


async def _expire(user_id: str) -> None:
    """The activation key ran out before it was used: a pending user becomes `expired`."""
    now = datetime.now(UTC)
    await User.filter(id=user_id, account_status="pending").update(
        account_status="expired", account_status_updated=now, modified=now
    )


async def register(ctx: Context, req: RegisterRequest, *, address: str = "") -> dict[str, str]:
    """Everything is checked before the key is used up (a mistyped password does not burn it); the key
    and the user change in one transaction, so of concurrent registrations with one key one wins."""
    check_new_password(req.password, req.password_confirm)
    avatar = await asyncio.to_thread(decode_avatar, req.avatar) if req.avatar else None
    await ctx.limiter.attempt("registration", account=req.activation_key, address=address)
    row = await peek("activation", req.activation_key)
    if row is None:
        raise invalid_key(KEY_FIELD, WHAT)
    user_id = str(row.user_id)  # type: ignore[attr-defined]
    if is_expired(row):
        await _expire(user_id)
        raise expired_key(KEY_FIELD, WHAT)
    password_hash = await hash_password(req.password)  # slow: not inside the transaction
    try:
        async with in_transaction():
            await user_keys.take("activation", req.activation_key, what=WHAT)
            user = await User.get(id=user_id)
            if user.account_status != "pending":  # deactivated (or activated) since the invitation
                raise invalid_key(KEY_FIELD, WHAT)
            now = datetime.now(UTC)
            user.first_name = req.first_name
            user.last_name = req.last_name
            if req.phone_number is not None:
                user.phone_number = req.phone_number
            if avatar is not None:
                user.avatar, user.avatar_type = avatar
            user.password_hash = password_hash
            user.password_changed = now
            user.account_status = "active"
            user.account_status_updated = now
            await user.save()
            await end_sessions(user_id)
    except Gone:
        await _expire(user_id)
        raise expired_key(KEY_FIELD, WHAT) from None
    except InvalidPayload as exc:  # the key was taken by a concurrent request: name the field
        if exc.errors:
            raise
        raise invalid_key(KEY_FIELD, WHAT) from None
    forget_principal(ctx, user_id)
    return {"detail": REGISTERED}
