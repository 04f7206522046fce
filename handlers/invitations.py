"""Invitations: a new user gets a mail with an activation key and the registration link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from handlers import user_keys
from handlers.context import Context
from handlers.mail import send_mail
from models.accounts import User


def app_query(mobile: bool, scheme: str | None) -> str:
    """The `?mobile=...&scheme=...` a link in mail carries (spec/users.rst, password recovery)."""
    params = {"mobile": "true" if mobile else "false"}
    if mobile and scheme:
        params["scheme"] = scheme
    return "?" + urlencode(params)


def registration_link(ctx: Context, key: str, user: User, *, mobile: bool = False, scheme: str | None = None) -> str:
    parts = "/".join(quote(p, safe="@") for p in (key, user.first_name, user.last_name, user.username))
    return f"{ctx.users.portal_url}/#/user-registration/{parts}/{app_query(mobile, scheme)}"


async def invite(
    ctx: Context, user: User, *, portal: bool = False, mobile: bool = False, scheme: str | None = None
) -> str:
    """Make `user` pending with a fresh activation key (earlier ones stop working) and mail it.
    Returns the key (the caller never shows it to the inviter)."""
    key = await user_keys.issue(user, "activation", timedelta(days=ctx.users.activation_days))
    user.account_status = "pending"
    user.account_status_updated = datetime.now(UTC)
    await user.save(update_fields=["account_status", "account_status_updated", "modified"])
    link = registration_link(ctx, key, user, mobile=mobile, scheme=scheme)
    days = f"{ctx.users.activation_days:g}"
    if portal:
        body = f"You have been invited to Gatehouse.\n\nFinish setting up your account here:\n{link}\n"
    else:
        body = (
            "You have been invited to Gatehouse.\n\n"
            f"Your activation key: {key}\n\n"
            "Set your password with POST /users/register/ and this key, or open:\n"
            f"{link}\n"
        )
    body += f"\nThe key works once and expires in {days} days.\n"
    await send_mail(ctx, user.username, "Your Gatehouse invitation", body)
    return key
