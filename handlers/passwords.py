"""Password recovery (spec/users.rst, Password Recovery Processes): a mailed link with the user's
uidb64 and a one-time token, then the new password with both."""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from tortoise.transactions import in_transaction

from handlers import user_keys
from handlers.accounts import forget_principal
from handlers.context import Context
from handlers.errors import Gone, InvalidPayload
from handlers.invitations import app_query
from handlers.mail import send_mail
from handlers.mailed_keys import check_new_password, end_sessions, expired_key, invalid_key, is_expired, peek
from handlers.secrets import digest, hash_password, new_secret
from models.accounts import User, UserKey

PURPOSE = "password_reset"
WHAT = "password reset token"
# Who may reset a forgotten password: active users, and those whose username change is pending.
RESETTABLE = ("active", "transfer")
REQUESTED = "An email was sent with instructions to reset password."
CHANGED = "Password has been changed successfully."
_NO_USER = uuid.UUID(int=0)


class AppQuery(BaseModel):
    mobile: bool = Field(False, description="the request comes from a mobile app")
    scheme: str | None = Field(
        None, max_length=100, pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*$", description="URL scheme the mobile app handles"
    )


class PasswordResetRequest(BaseModel):
    username: str = Field(min_length=1, max_length=254)


class PasswordChange(BaseModel):
    token: str = Field(min_length=1, max_length=200, description="the token from the reset link")
    uidb64: str = Field(min_length=1, max_length=200, description="the uidb64 from the reset link")
    password: str = Field(max_length=128, description="see the password rules (docs/users.md)")
    password_confirm: str = Field(max_length=128)


def uidb64(user_id: uuid.UUID) -> str:
    """URL-safe base64 (no padding) of the user's id as 32 hex digits, as in the spec's example link."""
    return base64.urlsafe_b64encode(user_id.hex.encode()).rstrip(b"=").decode()


def user_id_of(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def reset_link(ctx: Context, user: User, token: str, *, mobile: bool = False, scheme: str | None = None) -> str:
    return f"{ctx.users.portal_url}/#/reset-password/{uidb64(user.id)}/{token}{app_query(mobile, scheme)}"


async def request_reset(
    ctx: Context, req: PasswordResetRequest, query: AppQuery, *, address: str = ""
) -> dict[str, str]:
    """Mail a reset link to an active (or transfer) user. The answer is the same whether or not the
    username exists, and so is the work, as far as it can be: a key is made and the user's old keys
    voided either way; only the two inserts (the key, the mail) are skipped for nobody."""
    await ctx.limiter.attempt(PURPOSE, account=req.username, address=address)
    user = await User.get_or_none(username=req.username)
    if user is None or user.account_status not in RESETTABLE:
        digest(f"{PURPOSE}::{new_secret(20)}")
        await UserKey.filter(user_id=_NO_USER, purpose=PURPOSE, used_at=None).update(used_at=datetime.now(UTC))
        return {"detail": REQUESTED}
    hours = ctx.users.password_reset_hours
    token = await user_keys.issue(user, PURPOSE, timedelta(hours=hours))
    link = reset_link(ctx, user, token, mobile=query.mobile, scheme=query.scheme)
    body = (
        "Someone (hopefully you) asked to reset the password of your Gatehouse account.\n\n"
        f"Choose a new password here:\n{link}\n\n"
        f"The link works once and expires in {hours:g} hours; a later password change voids it.\n"
        "If you did not ask for this, ignore this mail: your password stays as it is.\n"
    )
    await send_mail(ctx, user.username, "Reset your Gatehouse password", body)
    return {"detail": REQUESTED}


async def change_password(ctx: Context, req: PasswordChange, *, address: str = "") -> dict[str, str]:
    """Set a new password with a reset token: 400 `invalid_key` if the token is unknown, used, voided
    or not this uid's; 410 `key_expired` if it ran out. One-time under concurrency."""
    check_new_password(req.password, req.password_confirm)
    uid = user_id_of(req.uidb64)
    await ctx.limiter.attempt(PURPOSE, account=f"uid:{uid or req.uidb64}", address=address)
    row = await peek(PURPOSE, req.token)
    # Found by its digest, then matched to the uid: a token is only good for the user it was mailed to.
    owner = str(row.user_id) if row is not None else ""  # type: ignore[attr-defined]
    if row is None or not hmac.compare_digest(owner, str(uid or "")):
        raise invalid_key("token", WHAT)
    if is_expired(row):
        raise expired_key("token", WHAT)
    user = await User.get_or_none(id=owner)
    if user is None or user.account_status not in RESETTABLE:
        raise invalid_key("token", WHAT)
    if user.password_changed is not None and row.created < user.password_changed:
        raise invalid_key("token", WHAT)  # made before the latest password change
    password_hash = await hash_password(req.password)  # slow: not inside the transaction
    try:
        async with in_transaction():
            taken = await user_keys.take(PURPOSE, req.token, what=WHAT)
            if taken.id != row.id:  # cannot happen (digests are unique); never act on another row
                raise invalid_key("token", WHAT)
            now = datetime.now(UTC)
            await User.filter(id=owner).update(password_hash=password_hash, password_changed=now, modified=now)
            await end_sessions(owner)
    except Gone:  # ran out since it was looked at
        raise expired_key("token", WHAT) from None
    except InvalidPayload as exc:  # taken by a concurrent request
        if exc.errors:
            raise
        raise invalid_key("token", WHAT) from None
    forget_principal(ctx, owner)
    return {"detail": CHANGED}
