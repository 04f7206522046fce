"""Who sees what: a user's tenant, scopes and permissions, and the queries that respect them.

A gooee user sees everything. A partner user sees their partner, its customers, and whatever
`partner_scopes` / `customer_scopes` add; a customer user sees their customer and their
`customer_scopes`. Anything else answers 404, exactly like something that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, RootModel
from tortoise.expressions import Q
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from handlers.context import Context
from handlers.errors import Forbidden, InvalidPayload, NotFound
from handlers.principal import Principal
from models.accounts import User
from models.tenancy import Customer, Partner

# The permission codenames a user group may hold (spec/users.rst and its examples).
PERMISSIONS = tuple(
    sorted(
        [f"{verb}_{thing}" for thing in ("action", "device", "rule") for verb in ("add", "change", "delete")]
        + [
            "manage_customer_users",
            "manage_customers",
            "manage_partner_users",
            "manage_user_groups",
        ]
    )
)


async def principal_of(user: User) -> Principal:
    """The Principal for `user`: their tenant, what they see, the union of their groups' permissions."""
    partner_id = str(user.partner_id) if user.partner_id else None  # type: ignore[attr-defined]
    customer_id = str(user.customer_id) if user.customer_id else None  # type: ignore[attr-defined]
    permissions: set[str] = set()
    for group in await user.user_groups.all():
        permissions.update(group.permissions)
    partners: set[str] = set()
    customers: set[str] = set()
    if user.account_type != "gooee":
        if partner_id:
            partners.add(partner_id)
        if customer_id:
            customers.add(customer_id)
        partners.update(str(p.id) for p in await user.partner_scopes.all())
        customers.update(str(c.id) for c in await user.customer_scopes.all())
        if partners:
            of_partners = await Customer.filter(partner_id__in=partners).values_list("id", flat=True)
            customers.update(str(i) for i in of_partners)
    return Principal(
        str(user.id),
        user.username,
        user.account_type,
        partner_id,
        customer_id,
        frozenset(partners),
        frozenset(customers),
        frozenset(permissions),
    )


def users_seen_by(principal: Principal) -> Q:
    """A filter on User: the users this principal may see (themselves always)."""
    if principal.is_admin:
        return Q()
    return Q(id=principal.user_id) | Q(partner_id__in=principal.partners) | Q(customer_id__in=principal.customers)


def devices_seen_by(principal: Principal) -> Q:
    """A filter on Device: the devices of the tenants this principal sees, and their own."""
    if principal.is_admin:
        return Q()
    return (
        Q(owner_id=principal.user_id)
        | Q(tenant_partner_id__in=principal.partners)
        | Q(tenant_customer_id__in=principal.customers)
    )


def has_tenant(principal: Principal) -> bool:
    """A partner or customer user: their rights come from their groups' permissions. Users without a
    tenant (the CLI's personal accounts) keep every right over their own devices."""
    return bool(principal.partner_id or principal.customer_id)


def partners_seen_by(principal: Principal) -> Q:
    """A filter on Partner: their own partner and `partner_scopes` (gooee: all)."""
    return Q() if principal.is_admin else Q(id__in=principal.partners)


def customers_seen_by(principal: Principal) -> Q:
    """A filter on Customer: their own customer, their partner's customers and the scopes (gooee: all)."""
    return Q() if principal.is_admin else Q(id__in=principal.customers)


def groups_seen_by(principal: Principal) -> Q:
    """A filter on UserGroup: the groups of the tenants the principal sees (gooee: all, tenantless ones too)."""
    if principal.is_admin:
        return Q()
    return Q(partner_id__in=principal.partners) | Q(customer_id__in=principal.customers)


def as_uuid(raw: object, what: str) -> uuid.UUID:
    """An id from a path; anything that is not a UUID names nothing (404 like a missing one)."""
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise NotFound(f"{what} {raw} not found", code=f"{what}_not_found") from None


def require(principal: Principal, permission: str) -> None:
    """403 `permission_denied` unless the principal holds `permission` (gooee holds all)."""
    if not principal.may(permission):
        raise Forbidden(f"permission {permission!r} required", code="permission_denied")


async def user_permissions(principal: Principal, user_id: str | None = None) -> list[str]:
    """The sorted union of a user's groups' permissions (gooee: all); a user outside the view is 404."""
    if user_id is None:
        user = await User.get(id=principal.user_id)
    else:
        user = await User.filter(users_seen_by(principal), id=as_uuid(user_id, "user")).first()
        if user is None:
            raise NotFound(f"user {user_id} not found", code="user_not_found")
    if user.account_type == "gooee":
        return list(PERMISSIONS)
    groups = await user.user_groups.all()
    return sorted({p for g in groups for p in g.permissions})


async def create_tenant_user(
    username: str, password: str, account_type: str, *, partner: str | None = None, customer: str | None = None
) -> User:
    """The CLI's `users create`: a user, optionally of a partner or a customer (checked like the API:
    only one of them, a partner for a partner user, a customer for a customer user, and one that exists)."""
    from handlers.accounts import create_user  # accounts imports this module

    if partner and customer:
        raise InvalidPayload("only one of partner or customer may be given", code="invalid_tenant")
    if account_type == "partner" and not partner:
        raise InvalidPayload("a partner user needs a partner", code="invalid_tenant")
    if partner and account_type != "partner":
        raise InvalidPayload("only a partner user has a partner", code="invalid_tenant")
    if customer and account_type != "customer":
        raise InvalidPayload("only a customer user has a customer", code="invalid_tenant")
    tenant: dict[str, uuid.UUID] = {}
    if partner:
        ref = parse_uuid(partner)
        if ref is None or not await Partner.exists(id=ref):
            raise InvalidPayload(f"partner {partner} not found", code="invalid_tenant")
        tenant["partner_id"] = ref
    if customer:
        ref = parse_uuid(customer)
        if ref is None or not await Customer.exists(id=ref):
            raise InvalidPayload(f"customer {customer} not found", code="invalid_tenant")
        tenant["customer_id"] = ref
    async with in_transaction():
        user = await create_user(username, password, account_type)
        if tenant:
            await User.filter(id=user.id).update(**tenant)
            await user.refresh_from_db()
    return user


def parse_uuid(raw: str) -> uuid.UUID | None:
    """The UUID in `raw`, or None when it is not one."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


class PageQuery(BaseModel):
    """`?limit=&offset=` on the tenancy lists; `count` is the total, `results` one page of it."""

    limit: int = Field(100, ge=1, le=1000, description="at most this many results")
    offset: int = Field(0, ge=0, le=2**31 - 1, description="skip this many first")


async def page(query: QuerySet[Any], q: PageQuery, view: Callable[[Any], dict[str, object]]) -> dict[str, object]:
    total = await query.count()
    rows = await query.order_by("created", "id").offset(q.offset).limit(q.limit)
    return {"count": total, "results": [view(r) for r in rows]}


def bad_reference(field: str, detail: str) -> InvalidPayload:
    """A body field naming something missing or out of view: 400 naming the field, alike for both."""
    return InvalidPayload(f"{field}: {detail}", code="invalid_reference", errors=[{"field": field, "message": detail}])


async def seen_partner(principal: Principal, raw: str, field: str = "partner") -> Partner:
    ref = parse_uuid(raw)
    found = await Partner.filter(partners_seen_by(principal), id=ref).first() if ref else None
    if found is None:
        raise bad_reference(field, f"partner {raw} not found")
    return found


async def seen_customer(principal: Principal, raw: str, field: str = "customer") -> Customer:
    ref = parse_uuid(raw)
    found = await Customer.filter(customers_seen_by(principal), id=ref).first() if ref else None
    if found is None:
        raise bad_reference(field, f"customer {raw} not found")
    return found


class PermissionList(RootModel[list[str]]):
    """Sorted permission codenames."""


def forget_partner_views(ctx: Context, *partner_ids: str) -> None:
    """A customer was added to or moved between these partners: every cached principal that sees one
    of them is dropped, so the partners' users see the change at once (not after PRINCIPAL_TTL)."""
    wanted = set(partner_ids)
    for token, (principal, _) in list(ctx.principals.items()):
        if principal.partners & wanted:
            ctx.principals.pop(token, None)
