"""/partners, /customers, /user_groups and the permissions of users: thin adapters over handlers/."""

from __future__ import annotations

from aiohttp import web

from handlers import customers, partners, tenancy, user_groups
from handlers.customers import CustomerBody, CustomerList, CustomerPatch, CustomerView
from handlers.partners import PartnerBody, PartnerList, PartnerPatch, PartnerView
from handlers.principal import Principal
from handlers.tenancy import PageQuery, PermissionList
from handlers.user_groups import GroupBody, GroupList, GroupPatch, GroupView
from http_api.endpoint import Endpoint
from http_api.state import ctx_of


def _id(request: web.Request) -> str:
    return request.match_info["id"]


async def create_partner(request: web.Request, who: Principal, body: PartnerBody) -> dict[str, object]:
    return await partners.create_partner(who, body)


async def list_partners(request: web.Request, who: Principal, query: PageQuery) -> dict[str, object]:
    return await partners.list_partners(who, query)


async def get_partner(request: web.Request, who: Principal) -> dict[str, object]:
    return await partners.get_partner(who, _id(request))


async def replace_partner(request: web.Request, who: Principal, body: PartnerBody) -> dict[str, object]:
    return await partners.update_partner(who, _id(request), body)


async def patch_partner(request: web.Request, who: Principal, body: PartnerPatch) -> dict[str, object]:
    return await partners.update_partner(who, _id(request), body)


async def delete_partner(request: web.Request, who: Principal) -> None:
    await partners.delete_partner(who, _id(request))


async def create_customer(request: web.Request, who: Principal, body: CustomerBody) -> dict[str, object]:
    return await customers.create_customer(ctx_of(request), who, body)


async def list_customers(request: web.Request, who: Principal, query: PageQuery) -> dict[str, object]:
    return await customers.list_customers(who, query)


async def get_customer(request: web.Request, who: Principal) -> dict[str, object]:
    return await customers.get_customer(who, _id(request))


async def replace_customer(request: web.Request, who: Principal, body: CustomerBody) -> dict[str, object]:
    return await customers.update_customer(ctx_of(request), who, _id(request), body)


async def patch_customer(request: web.Request, who: Principal, body: CustomerPatch) -> dict[str, object]:
    return await customers.update_customer(ctx_of(request), who, _id(request), body)


async def delete_customer(request: web.Request, who: Principal) -> None:
    await customers.delete_customer(who, _id(request))


async def create_user_group(request: web.Request, who: Principal, body: GroupBody) -> dict[str, object]:
    return await user_groups.create_group(who, body)


async def list_user_groups(request: web.Request, who: Principal, query: PageQuery) -> dict[str, object]:
    return await user_groups.list_groups(who, query)


async def get_user_group(request: web.Request, who: Principal) -> dict[str, object]:
    return await user_groups.get_group(who, _id(request))


async def replace_user_group(request: web.Request, who: Principal, body: GroupBody) -> dict[str, object]:
    return await user_groups.update_group(ctx_of(request), who, _id(request), body)


async def patch_user_group(request: web.Request, who: Principal, body: GroupPatch) -> dict[str, object]:
    return await user_groups.update_group(ctx_of(request), who, _id(request), body)


async def delete_user_group(request: web.Request, who: Principal) -> None:
    await user_groups.delete_group(ctx_of(request), who, _id(request))


async def user_permissions(request: web.Request, who: Principal) -> list[str]:
    return await tenancy.user_permissions(who, _id(request))


async def my_permissions(request: web.Request, who: Principal) -> list[str]:
    return await tenancy.user_permissions(who)


WHO = (
    "Gooee users see every {0}; partner and customer users see their own tenant's (and their scopes'); "
    "any other {0} answers 404 `{0}_not_found`, exactly like a missing one."
)
REF = "400 `invalid_reference` when `partner` or `customer` names nothing the caller sees. "


def _crud(
    base: str, what: str, name: str, body: type, patch: type, view: type, listing: type, handlers: dict, rules: str
) -> list[Endpoint]:
    one = f"{base}{{id}}/"
    who = WHO.format(name)
    return [
        Endpoint(
            "POST", base, handlers["create"], f"Create a {what}", {201: view}, errors=(403,), body=body,
            tag="tenancy", description=rules,
        ),
        Endpoint(
            "GET", base, handlers["list"], f"The {what}s the caller sees, oldest first", {200: listing},
            query=PageQuery, tag="tenancy", description=who,
        ),
        Endpoint("GET", one, handlers["get"], f"One {what}", {200: view}, tag="tenancy", description=who),
        Endpoint(
            "PUT", one, handlers["replace"], f"Replace a {what}", {200: view}, errors=(403,), body=body,
            tag="tenancy", description=rules,
        ),
        Endpoint(
            "PATCH", one, handlers["patch"], f"Change some fields of a {what}", {200: view}, errors=(403,),
            body=patch, tag="tenancy", description=rules,
        ),
        Endpoint(
            "DELETE", one, handlers["delete"], f"Delete a {what}", {204: None}, errors=(403, 409), tag="tenancy",
            description=rules,
        ),
    ]  # fmt: skip


ENDPOINTS = [
    *_crud(
        "/partners/", "partner", "partner", PartnerBody, PartnerPatch, PartnerView, PartnerList,
        {"create": create_partner, "list": list_partners, "get": get_partner, "replace": replace_partner,
         "patch": patch_partner, "delete": delete_partner},
        "Only gooee users create, change or delete partners (403 `permission_denied`). Deleting a partner that "
        "still has customers, users or devices answers 409 `partner_in_use` naming them.",
    ),
    *_crud(
        "/customers/", "customer", "customer", CustomerBody, CustomerPatch, CustomerView, CustomerList,
        {"create": create_customer, "list": list_customers, "get": get_customer, "replace": replace_customer,
         "patch": patch_customer, "delete": delete_customer},
        "Gooee users manage every customer; a partner user with `manage_customers` their own partner's "
        "(`partner` defaults to it); anyone else 403 `permission_denied`. " + REF
        + "Deleting a customer with users or devices answers 409 `customer_in_use`.",
    ),
    *_crud(
        "/user_groups/", "user group", "user_group", GroupBody, GroupPatch, GroupView, GroupList,
        {"create": create_user_group, "list": list_user_groups, "get": get_user_group,
         "replace": replace_user_group, "patch": patch_user_group, "delete": delete_user_group},
        "Gooee users manage every group; a partner or customer user with `manage_user_groups` their own "
        "tenant's (a group they create is their tenant's). Granting a permission one does not hold: 403 "
        "`permission_denied`. An unknown permission: 400 naming it. " + REF,
    ),
    Endpoint(
        "GET", "/users/{id}/permissions", user_permissions, "The user's permissions: their groups' union",
        {200: PermissionList}, tag="tenancy",
        description="Sorted codenames; a gooee user holds them all. A user the caller does not see: 404.",
    ),
    Endpoint(
        "GET", "/me/permissions", my_permissions, "The caller's permissions: their groups' union",
        {200: PermissionList}, tag="tenancy", description="Sorted codenames; a gooee user holds them all.",
    ),
]  # fmt: skip
