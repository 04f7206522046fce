"""Who may do what with a user, and the checks a user's fields pass (spec/users.rst constraints).

Who sees a user: `tenancy.users_seen_by`; anyone else's user answers 404 like a missing one.
Who may manage a user they see (change, delete, activate, deactivate, create):
- a gooee user: anyone;
- a partner user with `manage_partner_users`: partner users of the partners they see (their own and
  their `partner_scopes`);
- a partner or customer user with `manage_customer_users`: customer users of the customers they see.
Nobody but a gooee user manages gooee users.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from tortoise.expressions import Q

from handlers.errors import Conflict, Forbidden, GatehouseError, InvalidPayload, NotFound
from handlers.principal import Principal
from handlers.tenancy import parse_uuid, users_seen_by
from models.accounts import User
from models.tenancy import Customer, Partner, UserGroup

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
EMAIL_RE = re.compile(EMAIL_PATTERN)
MAX_GROUPS = 5


def field_error(cls: type[GatehouseError], field: str, message: str, code: str) -> GatehouseError:
    """An error that names the field, as schema errors do: errors=[{"field", "message"}]."""
    return cls(f"{field}: {message}", code=code, errors=[{"field": field, "message": message}])


# --- who may do what -----------------------------------------------------------------------------


async def visible_user(principal: Principal, raw_id: str) -> User:
    """The user if the caller sees them; 404 `user_not_found` otherwise (and for a malformed id)."""
    user_id = parse_uuid(raw_id)
    user = await User.filter(users_seen_by(principal), id=user_id).first() if user_id else None
    if user is None:
        raise NotFound(f"user {raw_id} not found", code="user_not_found")
    return user


def may_manage(principal: Principal, account_type: str, partner_id: Any, customer_id: Any) -> bool:
    """May the caller manage a user of this type and tenant (module docstring)?"""
    if principal.is_admin:
        return True
    if account_type == "partner":
        return (
            principal.account_type == "partner"
            and str(partner_id) in principal.partners
            and "manage_partner_users" in principal.permissions
        )
    if account_type == "customer":
        return str(customer_id) in principal.customers and "manage_customer_users" in principal.permissions
    return False


def _manages(principal: Principal, user: User) -> bool:
    return may_manage(principal, user.account_type, user.partner_id, user.customer_id)  # type: ignore[attr-defined]


def require_manager(principal: Principal, user: User) -> None:
    if not _manages(principal, user):
        raise Forbidden("you may not manage this user", code="permission_denied")


def may_read_preferences(principal: Principal, user: User) -> bool:
    return str(user.id) == principal.user_id or _manages(principal, user)


# --- field checks --------------------------------------------------------------------------------


def check_email(value: str) -> str:
    if not EMAIL_RE.match(value):
        raise field_error(InvalidPayload, "username", "must be an email address", "invalid_username")
    return value


async def check_tenant(principal: Principal, account_type: str, partner_id: Any, customer_id: Any) -> None:
    """The spec's complex constraints, and that the referenced tenant exists and is seen by the caller."""
    if partner_id and customer_id:
        raise field_error(InvalidPayload, "customer", "only one of partner or customer may be given", "invalid_tenant")
    if account_type == "customer":
        if not customer_id:
            raise field_error(InvalidPayload, "customer", "required when account_type is customer", "invalid_tenant")
        if partner_id:
            raise field_error(InvalidPayload, "partner", "a customer user has no partner", "invalid_tenant")
    elif account_type == "partner":
        if not partner_id:
            raise field_error(InvalidPayload, "partner", "required when account_type is partner", "invalid_tenant")
        if customer_id:
            raise field_error(InvalidPayload, "customer", "a partner user has no customer", "invalid_tenant")
    else:
        for name, given in (("partner", partner_id), ("customer", customer_id)):
            if given:
                raise field_error(InvalidPayload, name, "a gooee user has no partner or customer", "invalid_tenant")
    if partner_id and not (
        (principal.is_admin or str(partner_id) in principal.partners) and await Partner.exists(id=partner_id)
    ):
        raise field_error(InvalidPayload, "partner", f"unknown partner {partner_id}", "invalid_tenant")
    if customer_id and not (
        (principal.is_admin or str(customer_id) in principal.customers) and await Customer.exists(id=customer_id)
    ):
        raise field_error(InvalidPayload, "customer", f"unknown customer {customer_id}", "invalid_tenant")


async def check_groups(
    principal: Principal, ids: list[uuid.UUID], account_type: str, partner_id: Any, customer_id: Any
) -> list[UserGroup]:
    """The groups, each seen by the caller and of the user's tenant; 400 naming `user_groups`."""
    wanted = list(dict.fromkeys(ids))
    if len(wanted) > MAX_GROUPS:
        raise field_error(InvalidPayload, "user_groups", f"at most {MAX_GROUPS} user groups", "too_many_groups")
    groups = await UserGroup.filter(id__in=wanted) if wanted else []
    by_id = {g.id: g for g in groups}
    for gid in wanted:
        group = by_id.get(gid)
        g_partner = str(group.partner_id) if group and group.partner_id else None  # type: ignore[attr-defined]
        g_customer = str(group.customer_id) if group and group.customer_id else None  # type: ignore[attr-defined]
        seen = group is not None and (
            principal.is_admin or g_partner in principal.partners or g_customer in principal.customers
        )
        if not seen:
            raise field_error(InvalidPayload, "user_groups", f"unknown user group {gid}", "invalid_user_group")
        belongs = {
            "partner": g_partner == str(partner_id) and g_customer is None,
            "customer": g_customer == str(customer_id),
            "gooee": g_partner is None and g_customer is None,
        }[account_type]
        if not belongs:
            raise field_error(
                InvalidPayload, "user_groups", f"user group {gid} is not of the user's tenant", "invalid_user_group"
            )
    return [by_id[g] for g in wanted]


async def check_scopes(
    principal: Principal, field: str, ids: list[uuid.UUID], current: set[str]
) -> list[Partner] | list[Customer]:
    """customer_scopes / partner_scopes: gooee users set any; a partner user sets customer_scopes to
    customers of their own partner; nobody else changes them (403). Sending the current value passes."""
    wanted = list(dict.fromkeys(ids))
    model = Partner if field == "partner_scopes" else Customer
    rows = {r.id: r for r in await model.filter(id__in=wanted)} if wanted else {}
    seen = principal.partners if field == "partner_scopes" else principal.customers
    for sid in wanted:
        if sid not in rows or not (principal.is_admin or str(sid) in seen):
            raise field_error(InvalidPayload, field, f"unknown {model.__name__.lower()} {sid}", "invalid_scope")
    if {str(s) for s in wanted} == current or principal.is_admin:
        return list(rows[s] for s in wanted)
    own_partners_customers = principal.account_type == "partner" and field == "customer_scopes"
    if not own_partners_customers or any(
        str(rows[s].partner_id) != principal.partner_id  # type: ignore[attr-defined]
        for s in wanted
    ):
        raise field_error(Forbidden, field, "you may not set these scopes", "permission_denied")
    return list(rows[s] for s in wanted)


async def check_username_free(username: str, exclude: Any = None) -> None:
    taken = User.filter(Q(username=username) | Q(pending_username=username))
    if exclude is not None:
        taken = taken.exclude(id=exclude)
    if await taken.exists():
        raise field_error(Conflict, "username", f"{username} is already taken", "duplicate_username")
