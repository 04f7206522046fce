"""Customers: gooee users manage them all; a partner user with `manage_customers` manages their own
partner's; a customer user sees their own customer (and their `customer_scopes`)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from tortoise.exceptions import IntegrityError, OperationalError

from handlers.context import Context
from handlers.errors import Conflict, Forbidden, InvalidPayload, NotFound
from handlers.partners import Name, _still_has
from handlers.principal import Principal
from handlers.tenancy import PageQuery, as_uuid, customers_seen_by, forget_partner_views, page, require, seen_partner
from handlers.views import Timestamp, View
from models.accounts import User
from models.devices import Device
from models.tenancy import Customer


class CustomerBody(BaseModel):
    """POST and PUT. `partner` may be left out by a partner user (their own partner is meant)."""

    name: Name
    partner: str | None = Field(None, description="the customer's partner; a partner user's own when left out")


class CustomerPatch(BaseModel):
    name: Name = Field(None)  # type: ignore[assignment]
    partner: str = Field(None, description="move the customer to this partner")  # type: ignore[assignment]


class CustomerView(View):
    id: str
    name: str
    partner: str
    created: Timestamp
    modified: Timestamp


class CustomerList(View):
    count: int = Field(description="how many customers the caller sees in all")
    results: list[CustomerView]


def customer_view(c: Customer) -> dict[str, object]:
    return {
        "id": str(c.id),
        "name": c.name,
        "partner": str(c.partner_id),  # type: ignore[attr-defined]
        "created": c.created,
        "modified": c.modified,
    }


def _may_manage(principal: Principal, partner_id: str) -> None:
    """Gooee: any customer. A partner user with `manage_customers`: their own partner's. Nobody else."""
    if principal.is_admin:
        return
    if principal.account_type != "partner" or principal.partner_id is None:
        raise Forbidden("only gooee and partner users manage customers", code="permission_denied")
    require(principal, "manage_customers")
    if partner_id != principal.partner_id:
        raise Forbidden("a partner user manages only their own partner's customers", code="permission_denied")


async def _partner_for(principal: Principal, raw: str | None) -> str:
    if raw is None:
        if principal.is_admin or principal.partner_id is None:
            raise InvalidPayload(
                "partner: required", code="invalid_schema", errors=[{"field": "partner", "message": "required"}]
            )
        return principal.partner_id
    return str((await seen_partner(principal, raw)).id)


async def seen(principal: Principal, customer_id: str) -> Customer:
    found = await Customer.filter(customers_seen_by(principal), id=as_uuid(customer_id, "customer")).first()
    if found is None:
        raise NotFound(f"customer {customer_id} not found", code="customer_not_found")
    return found


async def create_customer(ctx: Context, principal: Principal, req: CustomerBody) -> dict[str, object]:
    if not principal.is_admin:  # who may create at all, before the body's partner is looked at
        _may_manage(principal, principal.partner_id or "")
    partner_id = await _partner_for(principal, req.partner)
    _may_manage(principal, partner_id)
    customer = await Customer.create(name=req.name, partner_id=partner_id)
    forget_partner_views(ctx, partner_id)
    return customer_view(customer)


async def list_customers(principal: Principal, q: PageQuery) -> dict[str, object]:
    return await page(Customer.filter(customers_seen_by(principal)), q, customer_view)


async def get_customer(principal: Principal, customer_id: str) -> dict[str, object]:
    return customer_view(await seen(principal, customer_id))


async def update_customer(
    ctx: Context, principal: Principal, customer_id: str, req: CustomerBody | CustomerPatch
) -> dict[str, object]:
    customer = await seen(principal, customer_id)
    _may_manage(principal, str(customer.partner_id))  # type: ignore[attr-defined]
    changes = req.model_dump(exclude_unset=not isinstance(req, CustomerBody))
    if "partner" in changes:
        changes["partner_id"] = await _partner_for(principal, changes.pop("partner"))
        _may_manage(principal, changes["partner_id"])
    if changes:
        before = str(customer.partner_id)  # type: ignore[attr-defined]
        customer.update_from_dict(changes)
        await customer.save()
        forget_partner_views(ctx, before, str(customer.partner_id))  # type: ignore[attr-defined]
    return customer_view(customer)


async def delete_customer(principal: Principal, customer_id: str) -> None:
    customer = await seen(principal, customer_id)
    _may_manage(principal, str(customer.partner_id))  # type: ignore[attr-defined]
    remaining = {
        "user(s)": await User.filter(customer_id=customer.id).count(),
        "device(s)": await Device.filter(tenant_customer_id=customer.id).count(),
    }
    if any(remaining.values()):
        raise _still_has("customer", customer_id, remaining)
    try:
        await customer.delete()
    except (IntegrityError, OperationalError) as exc:
        raise Conflict(f"customer {customer_id} is still in use", code="customer_in_use") from exc
