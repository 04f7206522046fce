"""Gateway Lite users register themselves with their provider's integration key and activate with a
6-digit token from the mail (spec/gateway-lite.rst, User Registration)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers import user_keys
from handlers.context import Context
from handlers.errors import Conflict, Gone, InvalidPayload, NotFound
from handlers.integration_keys import partner_of_key
from handlers.mail import send_mail
from handlers.mailed_keys import check_new_password
from handlers.registration import Detail, Name
from handlers.secrets import hash_password
from handlers.user_rules import EMAIL_RE, check_username_free, field_error
from models.accounts import User
from models.tenancy import Customer

PURPOSE = "gwl_activation"
REGISTERED = "User account registered successfully. Please check your email to activate it."
ACTIVATED = "User account activated successfully. You can login now."
TOKEN = re.compile(r"[0-9]{6}")

__all__ = ["ActivateRequest", "Detail", "SelfRegistration", "activate", "register"]


class SelfRegistration(BaseModel):
    integration_key: str = Field(min_length=1, max_length=200, description="the provider's integration key")
    first_name: Name
    last_name: Name
    email: str = Field(min_length=3, max_length=254, description="the user's email: their username")
    password: str = Field(max_length=128, description="see the password rules (docs/users.md)")
    password_confirm: str = Field(max_length=128)


class ActivateRequest(BaseModel):
    activation_token: str = Field(max_length=64, description="the 6-digit token from the registration mail")


async def register(ctx: Context, req: SelfRegistration, *, address: str = "") -> dict[str, str]:
    """A pending customer user with a customer of its own under the key's partner, and a mail with
    the activation token. Nothing is written when any check fails."""
    email = req.email.strip()
    if not EMAIL_RE.match(email):
        raise field_error(InvalidPayload, "email", "must be an email address", "invalid_email")
    check_new_password(req.password, req.password_confirm)
    await ctx.limiter.attempt("gateway_lite_registration", account=email.lower(), address=address)
    partner = await partner_of_key(ctx, req.integration_key)
    if partner is None:
        message = "unknown integration key"
        raise field_error(InvalidPayload, "integration_key", message, "invalid_integration_key")
    taken = field_error(InvalidPayload, "email", f"{email} is already registered", "duplicate_username")
    try:
        await check_username_free(email)
    except Conflict:
        raise taken from None
    if await User.filter(username__iexact=email).exists():  # one mailbox, whatever the case
        raise taken
    password_hash = await hash_password(req.password)
    now = datetime.now(UTC)
    try:
        async with in_transaction():
            customer = await Customer.create(name=f"{req.first_name} {req.last_name}"[:200], partner=partner)
            user = await User.create(
                username=email,
                password_hash=password_hash,
                account_type="customer",
                customer=customer,
                first_name=req.first_name,
                last_name=req.last_name,
                account_status="pending",
                account_status_updated=now,
                password_changed=now,
            )
            hours = ctx.gateway_lite.activation_hours
            token = await user_keys.issue_lookup_code(user, PURPOSE, timedelta(hours=hours))
    except IntegrityError:  # the same email registered concurrently
        raise taken from None
    await send_mail(
        ctx,
        email,
        "Activate your Gatehouse account",
        f"Welcome, {req.first_name}.\n\nYour activation token: {token}\n\n"
        f"Activate your account with POST /integrations/gateway_lite/users/activate/ and this token.\n"
        f"It works once and expires in {hours:g} hours.\n",
    )
    return {"detail": REGISTERED}


async def activate(ctx: Context, req: ActivateRequest, *, address: str = "") -> dict[str, str]:
    """400 for a token that is not six digits; 404 for one that is unknown, used or expired. Failures
    count per address and for the flow as a whole (docs/security.md)."""
    token = req.activation_token.strip()
    if not TOKEN.fullmatch(token):
        raise field_error(InvalidPayload, "activation_token", "must be the 6 digits from the mail", "invalid_token")
    not_found = field_error(
        NotFound, "activation_token", "unknown, used or expired token", "activation_token_not_found"
    )
    async with ctx.limiter.guard("gateway_lite_activation", account="*", address=address) as attempt:
        try:
            async with in_transaction():
                row = await user_keys.take(PURPOSE, token, what="activation token")
                user = await User.get(id=row.user_id)  # type: ignore[attr-defined]
                if user.account_status != "pending":
                    raise not_found
                now = datetime.now(UTC)
                user.account_status, user.account_status_updated = "active", now
                await user.save(update_fields=["account_status", "account_status_updated", "modified"])
        except (InvalidPayload, NotFound, Gone):  # unknown or used, not pending, expired: all alike
            attempt.fail()
            raise not_found from None
    return {"detail": ACTIVATED}
