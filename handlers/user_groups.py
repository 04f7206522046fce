"""User groups: a name and a permission set, owned by a partner, a customer, or neither (gooee's).

Gooee users manage every group; a partner or customer user with `manage_user_groups` manages their
own tenant's groups. Nobody but gooee gives a group a permission they do not hold themselves.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from handlers.accounts import forget_principal
from handlers.context import Context
from handlers.errors import Forbidden, InvalidPayload, NotFound
from handlers.partners import Name
from handlers.principal import Principal
from handlers.tenancy import (
    PERMISSIONS,
    PageQuery,
    as_uuid,
    groups_seen_by,
    page,
    require,
    seen_customer,
    seen_partner,
)
from handlers.views import Timestamp, View
from models.tenancy import UserGroup

PERMISSIONS_FIELD = {"items": {"enum": list(PERMISSIONS)}}


def _known(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    unknown = sorted(set(value) - set(PERMISSIONS))
    if unknown:
        raise ValueError(f"unknown permission(s): {', '.join(unknown)}")
    return sorted(set(value))


class GroupBody(BaseModel):
    """POST and PUT. With neither `partner` nor `customer` a partner or customer user's group is
    their own tenant's; a gooee user's is a gooee group."""

    name: Name
    permissions: list[str] = Field(
        default_factory=list, max_length=len(PERMISSIONS), json_schema_extra=PERMISSIONS_FIELD
    )
    partner: str | None = None
    customer: str | None = None

    _permissions = field_validator("permissions")(classmethod(lambda cls, v: _known(v)))


class GroupPatch(BaseModel):
    name: Name = Field(None)  # type: ignore[assignment]
    permissions: list[str] = Field(None, max_length=len(PERMISSIONS), json_schema_extra=PERMISSIONS_FIELD)  # type: ignore[assignment]
    partner: str | None = None
    customer: str | None = None

    _permissions = field_validator("permissions")(classmethod(lambda cls, v: _known(v)))


class GroupView(View):
    id: str
    name: str
    permissions: list[str] = Field(description="sorted permission codenames")
    partner: str | None
    customer: str | None
    created: Timestamp
    modified: Timestamp


class GroupList(View):
    count: int = Field(description="how many groups the caller sees in all")
    results: list[GroupView]


def group_view(g: UserGroup) -> dict[str, object]:
    partner_id = g.partner_id  # type: ignore[attr-defined]
    customer_id = g.customer_id  # type: ignore[attr-defined]
    return {
        "id": str(g.id),
        "name": g.name,
        "permissions": sorted(g.permissions),
        "partner": str(partner_id) if partner_id else None,
        "customer": str(customer_id) if customer_id else None,
        "created": g.created,
        "modified": g.modified,
    }


def _may_manage(principal: Principal, partner_id: str | None, customer_id: str | None) -> None:
    """Gooee: any group. Others: `manage_user_groups`, and only their own tenant's groups."""
    if principal.is_admin:
        return
    require(principal, "manage_user_groups")
    own = (partner_id is not None and partner_id == principal.partner_id) or (
        customer_id is not None and customer_id == principal.customer_id
    )
    if not own:
        raise Forbidden("only your own tenant's groups can be managed", code="permission_denied")


def _may_grant(principal: Principal, permissions: list[str]) -> None:
    missing = sorted(set(permissions) - principal.permissions)
    if missing and not principal.is_admin:
        raise Forbidden(f"you cannot grant permissions you do not hold: {', '.join(missing)}", code="permission_denied")


async def _tenant(principal: Principal, partner: str | None, customer: str | None) -> tuple[str | None, str | None]:
    """The group's (partner_id, customer_id) from the body's references (400 when unseen)."""
    if partner and customer:
        raise InvalidPayload(
            "only one of partner or customer may be given",
            code="invalid_schema",
            errors=[{"field": "customer", "message": "only one of partner or customer may be given"}],
        )
    if partner:
        return str((await seen_partner(principal, partner)).id), None
    if customer:
        return None, str((await seen_customer(principal, customer)).id)
    if principal.is_admin:
        return None, None
    return principal.partner_id, (None if principal.partner_id else principal.customer_id)


async def seen(principal: Principal, group_id: str) -> UserGroup:
    found = await UserGroup.filter(groups_seen_by(principal), id=as_uuid(group_id, "user_group")).first()
    if found is None:
        raise NotFound(f"user group {group_id} not found", code="user_group_not_found")
    return found


async def create_group(principal: Principal, req: GroupBody) -> dict[str, object]:
    if not principal.is_admin:
        require(principal, "manage_user_groups")
    partner_id, customer_id = await _tenant(principal, req.partner, req.customer)
    _may_manage(principal, partner_id, customer_id)
    _may_grant(principal, req.permissions)
    group = await UserGroup.create(
        name=req.name, permissions=req.permissions, partner_id=partner_id, customer_id=customer_id
    )
    return group_view(group)


async def list_groups(principal: Principal, q: PageQuery) -> dict[str, object]:
    return await page(UserGroup.filter(groups_seen_by(principal)), q, group_view)


async def get_group(principal: Principal, group_id: str) -> dict[str, object]:
    return group_view(await seen(principal, group_id))


def _tenant_of(group: UserGroup) -> tuple[str | None, str | None]:
    partner_id = group.partner_id  # type: ignore[attr-defined]
    customer_id = group.customer_id  # type: ignore[attr-defined]
    return (str(partner_id) if partner_id else None, str(customer_id) if customer_id else None)


async def update_group(
    ctx: Context, principal: Principal, group_id: str, req: GroupBody | GroupPatch
) -> dict[str, object]:
    group = await seen(principal, group_id)
    _may_manage(principal, *_tenant_of(group))
    full = isinstance(req, GroupBody)
    given = req.model_fields_set
    changes: dict[str, object] = {}
    if full or "name" in given:
        changes["name"] = req.name
    if full or "permissions" in given:
        _may_grant(principal, req.permissions)
        changes["permissions"] = req.permissions
    if full or {"partner", "customer"} & given:
        partner_id, customer_id = await _tenant(principal, req.partner, req.customer)
        _may_manage(principal, partner_id, customer_id)
        changes.update(partner_id=partner_id, customer_id=customer_id)
    if changes:
        group.update_from_dict(changes)
        await group.save()
        await _forget_members(ctx, group)
    return group_view(group)


async def delete_group(ctx: Context, principal: Principal, group_id: str) -> None:
    group = await seen(principal, group_id)
    _may_manage(principal, *_tenant_of(group))
    members = [str(u) for u in await group.users.all().values_list("id", flat=True)]
    await group.delete()
    for user_id in members:
        forget_principal(ctx, user_id)


async def _forget_members(ctx: Context, group: UserGroup) -> None:
    """The members' permissions changed: their cached principals go."""
    for user_id in await group.users.all().values_list("id", flat=True):
        forget_principal(ctx, str(user_id))
