"""Partners: gooee users manage them; a partner user sees their own (and their `partner_scopes`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints
from tortoise.exceptions import IntegrityError, OperationalError

from handlers.errors import Conflict, Forbidden, NotFound
from handlers.principal import Principal
from handlers.tenancy import PageQuery, as_uuid, page, partners_seen_by
from handlers.views import Timestamp, View
from models.accounts import User
from models.devices import Device
from models.tenancy import Customer, Partner

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class PartnerBody(BaseModel):
    """POST and PUT: the whole partner."""

    name: Name
    is_gateway_lite_provider: bool = False


class PartnerPatch(BaseModel):
    """PATCH: only the fields given change."""

    name: Name = Field(None)  # type: ignore[assignment]  # left out: unchanged; null is refused
    is_gateway_lite_provider: bool = Field(None)  # type: ignore[assignment]


class PartnerView(View):
    id: str
    name: str
    is_gateway_lite_provider: bool
    created: Timestamp
    modified: Timestamp


class PartnerList(View):
    count: int = Field(description="how many partners the caller sees in all")
    results: list[PartnerView]


def partner_view(p: Partner) -> dict[str, object]:
    return {
        "id": str(p.id),
        "name": p.name,
        "is_gateway_lite_provider": p.is_gateway_lite_provider,
        "created": p.created,
        "modified": p.modified,
    }


def _gooee_only(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("only gooee users create, change or delete partners", code="permission_denied")


async def seen(principal: Principal, partner_id: str) -> Partner:
    found = await Partner.filter(partners_seen_by(principal), id=as_uuid(partner_id, "partner")).first()
    if found is None:
        raise NotFound(f"partner {partner_id} not found", code="partner_not_found")
    return found


async def create_partner(principal: Principal, req: PartnerBody) -> dict[str, object]:
    _gooee_only(principal)
    return partner_view(await Partner.create(name=req.name, is_gateway_lite_provider=req.is_gateway_lite_provider))


async def list_partners(principal: Principal, q: PageQuery) -> dict[str, object]:
    return await page(Partner.filter(partners_seen_by(principal)), q, partner_view)


async def get_partner(principal: Principal, partner_id: str) -> dict[str, object]:
    return partner_view(await seen(principal, partner_id))


async def update_partner(principal: Principal, partner_id: str, req: PartnerBody | PartnerPatch) -> dict[str, object]:
    partner = await seen(principal, partner_id)  # out of view: 404 before 403
    _gooee_only(principal)
    changes = req.model_dump(exclude_unset=not isinstance(req, PartnerBody))
    if changes:
        partner.update_from_dict(changes)
        await partner.save()
    return partner_view(partner)


async def delete_partner(principal: Principal, partner_id: str) -> None:
    partner = await seen(principal, partner_id)
    _gooee_only(principal)
    remaining = {
        "customer(s)": await Customer.filter(partner_id=partner.id).count(),
        "user(s)": await User.filter(partner_id=partner.id).count(),
        "device(s)": await Device.filter(tenant_partner_id=partner.id).count(),
    }
    if any(remaining.values()):
        raise _still_has("partner", partner_id, remaining)
    try:
        await partner.delete()
    except (IntegrityError, OperationalError) as exc:  # something was added meanwhile
        raise Conflict(f"partner {partner_id} is still in use", code="partner_in_use") from exc


def _still_has(what: str, ident: str, remaining: dict[str, int]) -> Conflict:
    left = ", ".join(f"{n} {name}" for name, n in remaining.items() if n)
    return Conflict(f"{what} {ident} still has {left}: delete or move them first", code=f"{what}_in_use")
