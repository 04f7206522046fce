"""Products: what a Gateway Lite import names. Gooee manages every product; a partner's users manage
their partner's; everyone sees gooee's products (no partner) and their own partner's."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.expressions import Q

from handlers.errors import Conflict, Forbidden, NotFound
from handlers.principal import Principal
from handlers.tenancy import PageQuery, as_uuid, page, seen_partner
from handlers.views import Timestamp, View
from models.gateway_lite import GatewayLite, GatewayLiteImport, Product

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ProductBody(BaseModel):
    name: Name
    partner: uuid.UUID | None = Field(None, description="gooee only: the partner owning it (default: none)")


class ProductPatch(BaseModel):
    name: Name


class ProductView(View):
    id: str
    name: str
    partner: str | None
    created: Timestamp
    modified: Timestamp


class ProductList(View):
    count: int
    results: list[ProductView]


def product_view(p: Product) -> dict[str, object]:
    return {
        "id": str(p.id),
        "name": p.name,
        "partner": str(p.partner_id) if p.partner_id else None,  # type: ignore[attr-defined]
        "created": p.created,
        "modified": p.modified,
    }


def products_seen_by(principal: Principal) -> Q:
    if principal.is_admin:
        return Q()
    return Q(partner_id=None) | Q(partner_id__in=principal.partners)


def _manager(principal: Principal, product: Product | None = None) -> None:
    """Gooee, or a partner user for their own partner's product."""
    if principal.is_admin:
        return
    own = principal.account_type == "partner" and principal.partner_id
    if not own or (product is not None and str(product.partner_id) != principal.partner_id):  # type: ignore[attr-defined]
        raise Forbidden("only gooee and the product's partner's users manage products", code="permission_denied")


async def seen_product(principal: Principal, product_id: object) -> Product:
    found = await Product.filter(products_seen_by(principal), id=as_uuid(product_id, "product")).first()
    if found is None:
        raise NotFound(f"product {product_id} not found", code="product_not_found")
    return found


async def create_product(principal: Principal, req: ProductBody) -> dict[str, object]:
    _manager(principal)
    if principal.is_admin:
        partner_id = (await seen_partner(principal, str(req.partner))).id if req.partner else None
    else:
        partner_id = principal.partner_id
    return product_view(await Product.create(name=req.name, partner_id=partner_id))


async def list_products(principal: Principal, q: PageQuery) -> dict[str, object]:
    return await page(Product.filter(products_seen_by(principal)), q, product_view)


async def get_product(principal: Principal, product_id: str) -> dict[str, object]:
    return product_view(await seen_product(principal, product_id))


async def update_product(principal: Principal, product_id: str, req: ProductPatch) -> dict[str, object]:
    product = await seen_product(principal, product_id)
    _manager(principal, product)
    product.name = req.name
    await product.save()
    return product_view(product)


async def delete_product(principal: Principal, product_id: str) -> None:
    product = await seen_product(principal, product_id)
    _manager(principal, product)
    in_use = Conflict(f"product {product_id} has gateways or imports", code="product_in_use")
    if (
        await GatewayLite.filter(product_id=product.id).exists()
        or await GatewayLiteImport.filter(product_id=product.id).exists()
    ):
        raise in_use
    try:
        await product.delete()
    except (IntegrityError, OperationalError) as exc:
        raise in_use from exc
