"""Who sees what: a user's tenant, scopes and permissions, and the queries that respect them.

A gooee user sees everything. A partner user sees their partner, its customers, and whatever
`partner_scopes` / `customer_scopes` add; a customer user sees their customer and their
`customer_scopes`. Anything else answers 404, exactly like something that does not exist.
"""

from __future__ import annotations

from tortoise.expressions import Q

from handlers.principal import Principal
from models.accounts import User
from models.tenancy import Customer

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
