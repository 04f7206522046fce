"""Users (spec/users.rst): the view, who may manage whom, create / list / read / update / delete,
activate, deactivate, and the username (email) change request.

Who sees and who manages whom, and the fields' checks: handlers/user_rules.py. Someone editing
themselves through /users/{id}/ is held to /me's read-only fields unless they are gooee (no granting
yourself groups, scopes or another tenant).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from handlers import invitations, user_keys
from handlers.accounts import check_password_rules, forget_principal
from handlers.avatars import decode_avatar
from handlers.context import Context
from handlers.errors import Conflict, Forbidden, InvalidPayload
from handlers.mail import send_mail
from handlers.principal import Principal
from handlers.secrets import hash_password
from handlers.tenancy import users_seen_by
from handlers.user_rules import (
    EMAIL_PATTERN,
    MAX_GROUPS,
    check_email,
    check_groups,
    check_scopes,
    check_tenant,
    check_username_free,
    field_error,
    may_manage,
    require_manager,
    visible_user,
)
from handlers.views import Timestamp, View
from models.accounts import ACCOUNT_STATUSES, RefreshToken, User, UserKey
from models.devices import Device

AccountType = Literal["gooee", "partner", "customer"]
AccountStatus = Literal["active", "inactive", "pending", "expired", "transfer"]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254, pattern=EMAIL_PATTERN)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=50)]
Name = Annotated[str, StringConstraints(max_length=30)]
Phone = Annotated[str, StringConstraints(max_length=20)]
Ids = Annotated[list[uuid.UUID], Field(max_length=1000)]

# Fields a user may not change about themselves (spec: Update Current User).
READ_ONLY_SELF = (
    "account_type",
    "is_api_user",
    "buildings",
    "username",
    "partner",
    "customer",
    "customer_scopes",
    "partner_scopes",
    "user_groups",
)


# --- request and response bodies -----------------------------------------------------------------


class UserFields(BaseModel):
    """Every writable field; which are required depends on the route (see the subclasses)."""

    model_config = ConfigDict(extra="forbid")

    username: Email = Field(None, description="an email address; changing it starts the verification (202)")
    account_type: AccountType = Field(None)
    partner: uuid.UUID | None = Field(None, description="required for partner users; only one of partner, customer")
    customer: uuid.UUID | None = Field(None, description="required for customer users; only one of partner, customer")
    first_name: Name = Field(None)
    last_name: Name = Field(None)
    phone_number: Phone | None = Field(None)
    avatar: str | None = Field(
        None, max_length=2_000_000, description="PNG, JPEG or WebP, base64 or a data URI, at most 1 MiB; null clears"
    )
    tags: list[Tag] = Field(None, max_length=100)
    user_groups: list[uuid.UUID] = Field(None, max_length=MAX_GROUPS, description="at most 5, of the user's tenant")
    customer_scopes: Ids = Field(None, description="gooee users, or partner users for their partner's customers")
    partner_scopes: Ids = Field(None, description="gooee users only")
    buildings: list[uuid.UUID] = Field(None, max_length=0, description="always empty: there are no buildings")
    is_api_user: bool = Field(None)


class CreateUser(UserFields):
    username: Email
    account_type: AccountType
    password: str | None = Field(
        None, min_length=1, max_length=1024, description="optional: the user sets it when registering"
    )


class PutUser(UserFields):
    """PUT: `username` and `account_type` are required; a field left out keeps its value."""

    username: Email
    account_type: AccountType


class PatchUser(UserFields):
    """PATCH: any subset of the fields."""


class PutMe(UserFields):
    """PUT /me: the writable fields are required; read-only ones may be sent with their current value."""

    first_name: Name
    last_name: Name
    phone_number: Phone | None
    avatar: str | None = Field(max_length=2_000_000)
    tags: list[Tag] = Field(max_length=100)


def _storable(value: str | None) -> str | None:
    """A query string may carry what PostgreSQL cannot store or compare (NUL): refused on both backends."""
    if value is not None and "\x00" in value:
        raise ValueError("may not contain \\u0000")
    return value


class CreateQuery(BaseModel):
    portal: bool = Field(False, description="the user is created from the portal (the mail shows only the link)")
    mobile: bool = Field(False, description="the request comes from a mobile app")
    scheme: str | None = Field(
        None, max_length=100, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*$", description="url scheme the mobile app handles"
    )


class UserQuery(BaseModel):
    account_type: AccountType | None = None
    account_status: AccountStatus | None = None
    tags: str | None = Field(None, max_length=2000, description="comma-separated: users having ALL these tags")
    search: str | None = Field(None, max_length=254, description="in username, first or last name, any case")
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=2**31 - 1)

    _nul = field_validator("tags", "search")(_storable)


class UserView(View):
    id: str
    created: Timestamp
    modified: Timestamp
    username: str
    account_type: AccountType
    first_name: str
    last_name: str
    last_login: Timestamp | None
    account_status: AccountStatus
    account_status_updated: Timestamp | None
    user_groups: list[str]
    partner: str | None
    customer: str | None
    buildings: list[str] = Field(description="always empty: there are no buildings")
    phone_number: str | None
    avatar: str | None = Field(description="data:image/<type>;base64,... or null")
    tags: list[str]
    customer_scopes: list[str]
    partner_scopes: list[str]
    is_api_user: bool


class UserList(View):
    count: int = Field(description="users matching the filters (all pages)")
    results: list[UserView] = Field(description="this page, oldest first")


def _ids(related: Any) -> list[str]:
    return sorted(str(o.id) for o in related)


async def user_view(user: User, *, loaded: bool = False) -> dict[str, Any]:
    if not loaded:
        await user.fetch_related("user_groups", "customer_scopes", "partner_scopes")
    avatar = None
    if user.avatar:
        avatar = f"data:{user.avatar_type or 'image/png'};base64,{base64.b64encode(user.avatar).decode()}"
    partner_id = user.partner_id  # type: ignore[attr-defined]
    customer_id = user.customer_id  # type: ignore[attr-defined]
    return {
        "id": str(user.id),
        "created": user.created,
        "modified": user.modified,
        "username": user.username,
        "account_type": user.account_type,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "last_login": user.last_login,
        "account_status": user.account_status,
        "account_status_updated": user.account_status_updated,
        "user_groups": _ids(user.user_groups),
        "partner": str(partner_id) if partner_id else None,
        "customer": str(customer_id) if customer_id else None,
        "buildings": [],
        "phone_number": user.phone_number or None,
        "avatar": avatar,
        "tags": list(user.tags or []),
        "customer_scopes": _ids(user.customer_scopes),
        "partner_scopes": _ids(user.partner_scopes),
        "is_api_user": user.is_api_user,
    }


# --- routes' rules -------------------------------------------------------------------------------


async def create_user(
    ctx: Context, principal: Principal, req: CreateUser, *, portal: bool, mobile: bool, scheme: str | None
) -> dict[str, Any]:
    """A new user, pending, invited by mail (handlers.invitations)."""
    sent = req.model_dump(exclude_unset=True)
    username = check_email(req.username)
    await check_tenant(principal, req.account_type, req.partner, req.customer)
    if not may_manage(principal, req.account_type, req.partner, req.customer):
        raise Forbidden(f"you may not create {req.account_type} users here", code="permission_denied")
    if req.password is not None:
        check_password_rules(req.password)
    groups = await check_groups(principal, req.user_groups or [], req.account_type, req.partner, req.customer)
    c_scopes = await check_scopes(principal, "customer_scopes", req.customer_scopes or [], set())
    p_scopes = await check_scopes(principal, "partner_scopes", req.partner_scopes or [], set())
    avatar, avatar_type = await asyncio.to_thread(decode_avatar, req.avatar) or (None, "")
    await check_username_free(username)
    password_hash = await hash_password(req.password) if req.password else ""
    try:
        async with in_transaction():
            user = await User.create(
                username=username,
                password_hash=password_hash,
                account_type=req.account_type,
                partner_id=req.partner,
                customer_id=req.customer,
                first_name=sent.get("first_name") or "",
                last_name=sent.get("last_name") or "",
                phone_number=sent.get("phone_number") or "",
                tags=list(dict.fromkeys(req.tags or [])),
                is_api_user=bool(req.is_api_user),
                avatar=avatar,
                avatar_type=avatar_type,
                account_status="pending",
                account_status_updated=datetime.now(UTC),
                password_changed=datetime.now(UTC) if req.password else None,
            )
            if groups:
                await user.user_groups.add(*groups)
            if c_scopes:
                await user.customer_scopes.add(*c_scopes)
            if p_scopes:
                await user.partner_scopes.add(*p_scopes)
    except IntegrityError as exc:  # a concurrent create with the same username
        raise field_error(Conflict, "username", f"{username} is already taken", "duplicate_username") from exc
    await invitations.invite(ctx, user, portal=portal, mobile=mobile, scheme=scheme)
    return await user_view(user)


async def list_users(principal: Principal, q: UserQuery) -> dict[str, Any]:
    query = User.filter(users_seen_by(principal))
    if q.account_type:
        query = query.filter(account_type=q.account_type)
    if q.account_status:
        query = query.filter(account_status=q.account_status)
    if q.search:
        s = q.search
        query = query.filter(Q(username__icontains=s) | Q(first_name__icontains=s) | Q(last_name__icontains=s))
    wanted = {t.strip() for t in (q.tags or "").split(",") if t.strip()}
    users = await query.order_by("created", "id")
    if wanted:  # JSON containment differs between SQLite and PostgreSQL: filtered here
        users = [u for u in users if wanted <= set(u.tags or [])]
    page = users[q.offset : q.offset + q.limit]
    if page:
        await User.fetch_for_list(page, "user_groups", "customer_scopes", "partner_scopes")
    return {"count": len(users), "results": [await user_view(u, loaded=True) for u in page]}


async def get_user(principal: Principal, raw_id: str) -> dict[str, Any]:
    return await user_view(await visible_user(principal, raw_id))


async def update_user(
    ctx: Context, principal: Principal, raw_id: str, req: UserFields, *, me: bool = False
) -> tuple[dict[str, Any], bool]:
    """PUT / PATCH a user (or /me with `me=True`). Returns (view, accepted): accepted is True when a
    username change was requested (202; the username changes once the new address is verified)."""
    user = await visible_user(principal, raw_id)
    await user.fetch_related("user_groups", "customer_scopes", "partner_scopes")
    sent = req.model_dump(exclude_unset=True)
    current = await user_view(user, loaded=True)
    self_edit = str(user.id) == principal.user_id
    if me or (self_edit and not principal.is_admin):
        for name in READ_ONLY_SELF:
            if name in sent and _as_view(name, sent[name]) != current[name]:
                raise field_error(Forbidden, name, "read-only: you may not change it yourself", "read_only_field")
    else:
        require_manager(principal, user)

    new_username = sent.get("username")
    if new_username == user.username:
        new_username = None  # unchanged (a repeated request for the pending address issues a new key)
    if new_username is not None:
        if not principal.is_admin:
            raise field_error(Forbidden, "username", "only gooee users change usernames", "permission_denied")
        if user.account_status == "inactive":
            # The old username keeps logging in during a transfer: a deactivated account must not get one.
            message = "the account is deactivated: activate it before changing its username"
            raise field_error(InvalidPayload, "username", message, "account_not_active")
        check_email(new_username)
        await check_username_free(new_username, exclude=user.id)

    account_type = sent.get("account_type", user.account_type)
    partner_id = sent.get("partner", user.partner_id)  # type: ignore[attr-defined]
    customer_id = sent.get("customer", user.customer_id)  # type: ignore[attr-defined]
    tenant_changed = (
        account_type != user.account_type
        or str(partner_id or "") != str(user.partner_id or "")  # type: ignore[attr-defined]
        or str(customer_id or "") != str(user.customer_id or "")  # type: ignore[attr-defined]
    )
    if tenant_changed:
        await check_tenant(principal, account_type, partner_id, customer_id)
        if not may_manage(principal, account_type, partner_id, customer_id):
            raise Forbidden(f"you may not manage {account_type} users there", code="permission_denied")

    groups = None
    if "user_groups" in sent or tenant_changed:
        ids = sent["user_groups"] if "user_groups" in sent else [g.id for g in user.user_groups]
        if "user_groups" in sent and {str(i) for i in ids} == set(current["user_groups"]) and not tenant_changed:
            groups = None  # unchanged
        else:
            groups = await check_groups(principal, ids, account_type, partner_id, customer_id)
    scopes: dict[str, Any] = {}
    for name in ("customer_scopes", "partner_scopes"):
        if name in sent and _as_view(name, sent[name]) != current[name]:
            scopes[name] = await check_scopes(principal, name, sent[name], set(current[name]))

    # Only the columns this request changes are written: a concurrent deactivation, password
    # change or 2FA login must not be undone by a stale copy of the row.
    changed = ["modified"]
    if "avatar" in sent:
        user.avatar, user.avatar_type = await asyncio.to_thread(decode_avatar, sent["avatar"]) or (None, "")
        changed += ["avatar", "avatar_type"]
    for name in ("first_name", "last_name"):
        if name in sent:
            setattr(user, name, sent[name])
            changed.append(name)
    if "phone_number" in sent:
        user.phone_number = sent["phone_number"] or ""
        changed.append("phone_number")
    if "tags" in sent:
        user.tags = list(dict.fromkeys(sent["tags"]))
        changed.append("tags")
    if "is_api_user" in sent:
        user.is_api_user = sent["is_api_user"]
        changed.append("is_api_user")
    if tenant_changed:
        user.account_type, user.partner_id, user.customer_id = account_type, partner_id, customer_id  # type: ignore[attr-defined]
        changed += ["account_type", "partner_id", "customer_id"]

    key = previous_status = None
    old_username = user.username
    async with in_transaction():
        if new_username is not None:
            previous_status = await _status_before_transfer(user)
            user.pending_username = new_username
            user.account_status = "transfer"
            user.account_status_updated = datetime.now(UTC)
            key = await user_keys.issue(
                user,
                "email_change",
                timedelta(days=ctx.users.email_change_days),
                {"username": new_username, "status": previous_status},
            )
            changed += ["pending_username", "account_status", "account_status_updated"]
        await user.save(update_fields=changed)
        if groups is not None:
            await user.user_groups.clear()
            if groups:
                await user.user_groups.add(*groups)
        for name, rows in scopes.items():
            relation = getattr(user, name)
            await relation.clear()
            if rows:
                await relation.add(*rows)
    if tenant_changed or groups is not None or scopes or new_username is not None:
        forget_principal(ctx, str(user.id))
    if key is not None and new_username is not None:
        await _mail_username_change(ctx, old_username, new_username, key)
    return await user_view(user), key is not None


def _as_view(name: str, value: Any) -> Any:
    """A sent value in the view's form, to compare with the current one."""
    if name in ("user_groups", "customer_scopes", "partner_scopes", "buildings"):
        return sorted(str(v) for v in value or [])
    if name in ("partner", "customer"):
        return str(value) if value else None
    return value


async def _status_before_transfer(user: User) -> str:
    """The status to restore once the new address is verified (a second request keeps the first one's)."""
    if user.account_status != "transfer":
        return user.account_status
    last = await UserKey.filter(user_id=user.id, purpose="email_change").order_by("-id").first()
    status = (last.data or {}).get("status") if last else None
    return status if status in ACCOUNT_STATUSES and status != "transfer" else "active"


async def _mail_username_change(ctx: Context, old: str, new: str, key: str) -> None:
    days = f"{ctx.users.email_change_days:g}"
    await send_mail(
        ctx,
        old,
        "Your Gatehouse username change was requested",
        f"A change of your Gatehouse username from {old} to {new} was requested.\n\n"
        "It takes effect once the new address is verified; until then you log in as before.\n"
        "If you did not expect this, contact your administrator.\n",
    )
    link = f"{ctx.users.portal_url}/#/update-email/{key}/"
    await send_mail(
        ctx,
        new,
        "Confirm your new Gatehouse username",
        f"Your Gatehouse username is changing to {new}.\n\n"
        f"Confirm this address here:\n{link}\n\n"
        f"or with POST /users/update_email and the key: {key}\n\n"
        f"The key works once and expires in {days} days.\n",
    )


async def delete_user(ctx: Context, principal: Principal, raw_id: str) -> None:
    user = await visible_user(principal, raw_id)
    if str(user.id) == principal.user_id:
        raise InvalidPayload("you cannot delete yourself", code="cannot_delete_self")
    require_manager(principal, user)
    if await Device.exists(owner_id=user.id):
        raise Conflict("the user owns devices: delete or move them first", code="user_owns_devices")
    await user.delete()
    forget_principal(ctx, str(user.id))


async def activate_user(ctx: Context, principal: Principal, raw_id: str) -> dict[str, Any]:
    user = await visible_user(principal, raw_id)
    require_manager(principal, user)
    missing = [n for n in ("first_name", "last_name") if not getattr(user, n).strip()]
    if missing:
        raise InvalidPayload(
            f"the user needs a first and last name to be activated ({', '.join(missing)} missing)",
            code="names_required",
            errors=[{"field": n, "message": "required to activate"} for n in missing],
        )
    user.account_status = "active"
    user.account_status_updated = datetime.now(UTC)
    await user.save(update_fields=["account_status", "account_status_updated", "modified"])
    forget_principal(ctx, str(user.id))
    return await user_view(user)


async def deactivate_user(ctx: Context, principal: Principal, raw_id: str) -> dict[str, Any]:
    """Inactive: login refused, refresh tokens revoked, access tokens refused at once, mailed keys void."""
    user = await visible_user(principal, raw_id)
    if str(user.id) == principal.user_id:
        raise InvalidPayload("you cannot deactivate yourself", code="cannot_deactivate_self")
    require_manager(principal, user)
    now = datetime.now(UTC)
    async with in_transaction():
        user.account_status = "inactive"
        user.account_status_updated = now
        user.pending_username = None
        await user.save(update_fields=["account_status", "account_status_updated", "pending_username", "modified"])
        await RefreshToken.filter(user_id=user.id, revoked_at=None).update(revoked_at=now)
        await user_keys.void(str(user.id), "activation", "email_change", "password_reset")
    forget_principal(ctx, str(user.id))
    return await user_view(user)
