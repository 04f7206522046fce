"""Invitations: a new user gets a mail with an activation key and the registration link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from handlers import user_keys
from handlers.accounts import forget_principal
from handlers.context import Context
from handlers.errors import InvalidPayload
from handlers.mail import send_mail
from handlers.principal import Principal
from handlers.user_rules import require_manager, visible_user
from models.accounts import User, UserKey

RESENT = "A new invitation was sent to the user."
# An account that was activated is not invited again (an `inactive` one is: new or deactivated).
ACTIVATED = ("active", "transfer")


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
    key = await user_keys.issue(user, "activation", timedelta(days=ctx.users.activation_days), {"portal": portal})
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


async def resend(
    ctx: Context, principal: Principal, raw_id: str, *, mobile: bool = False, scheme: str | None = None
) -> dict[str, str]:
    """POST /users/(id)/resend_invitation/: a new activation key (the old one stops working) in the
    same kind of mail as the first invitation (portal or API)."""
    user = await visible_user(principal, raw_id)
    require_manager(principal, user)
    if user.account_status in ACTIVATED:
        raise InvalidPayload(f"the account is already {user.account_status}", code="already_active")
    last = await UserKey.filter(user_id=user.id, purpose="activation").order_by("-id").first()
    portal = bool(last and last.data.get("portal"))
    await invite(ctx, user, portal=portal, mobile=mobile, scheme=scheme)
    forget_principal(ctx, str(user.id))
    return {"detail": RESENT}
