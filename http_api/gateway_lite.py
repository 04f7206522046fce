"""Gateway Lite over REST (spec/gateway-lite.rst): integration keys, self-registration, products,
CSV imports, acquire and release, /devices/, fingerprints. Rules in handlers/; the multipart upload
is read here."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import ValidationError

from handlers import fingerprints, gateway_lite, gateway_lite_import, gateway_lite_users, integration_keys, products
from handlers.errors import GatehouseError, InvalidPayload, UnsupportedMediaType, invalid
from handlers.fingerprints import FingerprintBody, FingerprintList, FingerprintView, ResyncDetail, ResyncRequest
from handlers.gateway_lite import Acquired, AcquireRequest, DeviceEntries, DeviceEntry, ReleaseDetail
from handlers.gateway_lite_import import ImportForm, ImportList, ImportUpload, ImportView
from handlers.gateway_lite_users import ActivateRequest, Detail, SelfRegistration
from handlers.integration_keys import IntegrationKeyView
from handlers.principal import Principal
from handlers.products import ProductBody, ProductList, ProductPatch, ProductView
from handlers.tenancy import PageQuery
from http_api.endpoint import Endpoint
from http_api.state import client_address, ctx_of, door

GL = "/integrations/gateway_lite"
LIST_FIELDS = ("tags", "customer_scopes", "partner_scopes")
MAX_FIELD = 64 * 1024


def _id(request: web.Request) -> str:
    return request.match_info["id"]


async def get_integration_key(request: web.Request, who: Principal) -> dict[str, str]:
    return await integration_keys.get_key(ctx_of(request), who, _id(request))


async def rotate_integration_key(request: web.Request, who: Principal) -> dict[str, str]:
    return await integration_keys.rotate_key(ctx_of(request), who, _id(request))


async def register_gateway_lite_user(request: web.Request, body: SelfRegistration) -> dict[str, str]:
    return await gateway_lite_users.register(ctx_of(request), body, address=client_address(request))


async def activate_gateway_lite_user(request: web.Request, body: ActivateRequest) -> dict[str, str]:
    return await gateway_lite_users.activate(ctx_of(request), body, address=client_address(request))


async def create_product(request: web.Request, who: Principal, body: ProductBody) -> dict[str, object]:
    return await products.create_product(who, body)


async def list_products(request: web.Request, who: Principal, query: PageQuery) -> dict[str, object]:
    return await products.list_products(who, query)


async def get_product(request: web.Request, who: Principal) -> dict[str, object]:
    return await products.get_product(who, _id(request))


async def patch_product(request: web.Request, who: Principal, body: ProductPatch) -> dict[str, object]:
    return await products.update_product(who, _id(request), body)


async def delete_product(request: web.Request, who: Principal) -> None:
    await products.delete_product(who, _id(request))


async def _read_upload(request: web.Request, limit: int) -> tuple[dict[str, Any], str, bytes]:
    """The multipart fields, the file's name and its bytes (at most `limit`: 413 beyond)."""
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(f"Content-Type must be multipart/form-data, got {request.content_type}")
    fields: dict[str, list[str]] = {}
    filename, data = "", b""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):  # a nested multipart: not ours
                raise InvalidPayload("nested multipart bodies are not accepted", code="invalid_multipart")
            cap = limit if part.name == "csv_file" else MAX_FIELD
            buf = bytearray()
            while chunk := await part.read_chunk(65536):
                buf += chunk
                if len(buf) > cap:
                    raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=len(buf))
            if part.name == "csv_file":
                filename, data = part.filename or "", bytes(buf)
            elif part.name:
                fields.setdefault(part.name, []).append(buf.decode("utf-8", errors="replace"))
    except (web.HTTPException, GatehouseError):
        raise
    except Exception as exc:  # aiohttp's reader raises what it meets (ValueError, KeyError, RuntimeError...)
        raise InvalidPayload(f"not a valid multipart/form-data body: {exc}", code="invalid_multipart") from None
    form: dict[str, Any] = {name: values[-1] for name, values in fields.items() if name not in LIST_FIELDS}
    for name in LIST_FIELDS:
        values = fields.get(name, [])
        if len(values) == 1 and values[0].lstrip().startswith("["):
            try:
                form[name] = json.loads(values[0])
            except (ValueError, RecursionError):  # not JSON after all: validated as the text it is
                form[name] = values
        elif values:
            form[name] = [v for v in values if v != ""]
    return form, filename, data


async def create_import(request: web.Request, who: Principal) -> dict[str, object]:
    ctx = ctx_of(request)
    try:
        async with asyncio.timeout(door(request).body_timeout * 10):
            form, filename, data = await _read_upload(request, ctx.gateway_lite.import_max_bytes)
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason="request body not received in time") from None
    try:
        parsed = ImportForm.model_validate(form)
    except ValidationError as exc:
        raise invalid(exc) from exc
    return await gateway_lite_import.create_import(ctx, who, parsed, filename, data)


async def list_imports(request: web.Request, who: Principal) -> dict[str, object]:
    return await gateway_lite_import.list_imports(who)


async def get_import(request: web.Request, who: Principal) -> dict[str, object]:
    return await gateway_lite_import.get_import(who, _id(request))


async def delete_import(request: web.Request, who: Principal) -> None:
    await gateway_lite_import.delete_import(who, _id(request))


async def acquire(request: web.Request, who: Principal, body: AcquireRequest) -> dict[str, object]:
    return await gateway_lite.acquire(ctx_of(request), who, body)


async def list_devices_in_scope(request: web.Request, who: Principal, query: PageQuery) -> dict[str, object]:
    return await gateway_lite.list_devices(who, query)


async def get_device_in_scope(request: web.Request, who: Principal) -> dict[str, object]:
    return await gateway_lite.get_device(who, _id(request))


async def release_gateway(request: web.Request, who: Principal) -> dict[str, str]:
    return await gateway_lite.release(ctx_of(request), who, _id(request))


async def release_gateway_patch(request: web.Request, who: Principal) -> dict[str, str]:
    return await release_gateway(request, who)


async def create_fingerprint(request: web.Request, who: Principal, body: FingerprintBody) -> dict[str, str]:
    return await fingerprints.create(ctx_of(request), who, body)


async def list_fingerprints(request: web.Request, who: Principal) -> list[dict[str, str]]:
    return await fingerprints.list_own(who)


async def get_fingerprint(request: web.Request, who: Principal) -> dict[str, str]:
    return await fingerprints.get(who, _id(request))


async def delete_fingerprint(request: web.Request, who: Principal) -> None:
    await fingerprints.delete(ctx_of(request), who, _id(request))


async def resync_fingerprints(request: web.Request, who: Principal, body: ResyncRequest) -> dict[str, str]:
    return await fingerprints.resync(ctx_of(request), who, body)


ID = {"id": "the object's id (a UUID)"}
DEVICE_ID = {"id": "the registry id, or a Gateway Lite's UUID"}
KEY_RULES = (
    "For a partner with `is_gateway_lite_provider=true` (404 `not_a_gateway_lite_provider` otherwise, and for a "
    "partner out of view); only gooee and the partner's own users (403 for others who see the partner)."
)

# fmt: off
ENDPOINTS = [
    Endpoint(
        "GET", "/partners/{id}/integration_key/", get_integration_key, "A Gateway Lite provider's integration key",
        {200: IntegrationKeyView}, errors=(403,), tag="gateway lite", path_params=ID, description=KEY_RULES,
    ),
    Endpoint(
        "POST", "/partners/{id}/integration_key/rotate", rotate_integration_key, "Replace the integration key",
        {200: IntegrationKeyView}, errors=(403,), tag="gateway lite", path_params=ID,
        description="The old key stops working at once. " + KEY_RULES,
    ),
    Endpoint(
        "POST", f"{GL}/users/register/", register_gateway_lite_user,
        "Register yourself with a provider's integration key",
        {201: Detail}, errors=(400, 429), auth=None, body=SelfRegistration, tag="gateway lite",
        description="A pending customer user, with a customer of its own under the key's partner, and a mail "
        "carrying a 6-digit activation token. 400 `invalid_schema`, `invalid_email`, `password_mismatch`, "
        "`weak_password`, `invalid_integration_key`, `duplicate_username` (names `email`); nothing is written "
        "then. 429 `rate_limited` (`limits.gateway_lite_registration`).",
    ),
    Endpoint(
        "POST", f"{GL}/users/activate/", activate_gateway_lite_user,
        "Activate a self-registered account with its 6-digit token",
        {200: Detail}, errors=(400, 404, 429), auth=None, body=ActivateRequest, tag="gateway lite",
        description="400 `invalid_token` (not six digits); 404 `activation_token_not_found` (unknown, used or "
        "expired: a token works once). Failures are limited per address and for the whole flow "
        "(`limits.gateway_lite_activation`, docs/security.md): 429.",
    ),
    Endpoint(
        "POST", "/products/", create_product, "Create a product", {201: ProductView}, errors=(400, 403),
        body=ProductBody, tag="gateway lite",
        description="Gooee (any partner, or none) and partner users (their own partner's). Customers: 403.",
    ),
    Endpoint(
        "GET", "/products/", list_products, "The products the caller sees", {200: ProductList},
        query=PageQuery, tag="gateway lite",
        description="Gooee's products (no partner) and the caller's partners' (gooee: all).",
    ),
    Endpoint(
        "GET", "/products/{id}/", get_product, "One product", {200: ProductView}, tag="gateway lite", path_params=ID,
    ),
    Endpoint(
        "PATCH", "/products/{id}/", patch_product, "Rename a product", {200: ProductView}, errors=(403,),
        body=ProductPatch, tag="gateway lite", path_params=ID,
    ),
    Endpoint(
        "DELETE", "/products/{id}/", delete_product, "Delete a product", {204: None}, errors=(403, 409),
        tag="gateway lite", path_params=ID, description="409 `product_in_use` while gateways or imports name it.",
    ),
    Endpoint(
        "POST", f"{GL}/import", create_import, "Upload a CSV of Gateway Lites", {201: ImportView},
        errors=(400, 403, 413, 415), raw_body=ImportUpload, raw_body_media_type="multipart/form-data",
        tag="gateway lite",
        description="Answers at once (`pending`); the file is checked whole, then imported in the background "
        "(`processed_rows` moves; `status` ends `completed` or `failed`). All or nothing: a wrong header or "
        "delimiter, an empty field, a repeated or already registered euid, a file that is not UTF-8 CSV fails the "
        "import with `error_message` naming each bad line (the first 100). Gooee and partner users.",
    ),
    Endpoint(
        "GET", f"{GL}/import", list_imports, "The imports the caller sees", {200: ImportList}, errors=(403,),
        tag="gateway lite",
    ),
    Endpoint(
        "GET", f"{GL}/import/{{id}}", get_import, "One import (its progress)", {200: ImportView}, errors=(403,),
        tag="gateway lite", path_params=ID,
    ),
    Endpoint(
        "DELETE", f"{GL}/import/{{id}}", delete_import, "Delete an import record", {204: None}, errors=(403, 409),
        tag="gateway lite", path_params=ID,
        description="The gateways it imported stay. 409 `import_in_progress` while it runs.",
    ),
    Endpoint(
        "POST", f"{GL}/acquire", acquire, "Acquire an inactive Gateway Lite by its euid (or QR payload)",
        {200: Acquired}, errors=(400, 404), body=AcquireRequest, tag="gateway lite",
        description="inactive -> customer_provisioned, owned by the caller and their customer. 400 "
        "`already_acquired` (by anyone), `invalid_euid`; 404 `gateway_not_found`. Of racing callers one wins.",
    ),
    Endpoint(
        "GET", "/devices/", list_devices_in_scope, "Every device in the caller's scope, of every kind",
        {200: DeviceEntries}, query=PageQuery, tag="gateway lite",
    ),
    Endpoint(
        "GET", "/devices/{id}/", get_device_in_scope, "One device in scope", {200: DeviceEntry}, tag="gateway lite",
        path_params=DEVICE_ID,
    ),
    *[
        Endpoint(
            method, "/devices/{id}/release/", handler, "Release a Gateway Lite back to inactive",
            {200: ReleaseDetail}, errors=(403,), tag="gateway lite", path_params=DEVICE_ID,
            description="Its owner (or a tenant user with `change_device`). It goes back to its importer; the "
            "fingerprint list on the gateway is emptied. 404 for anything else than a Gateway Lite in scope.",
        )
        for method, handler in (("PUT", release_gateway), ("PATCH", release_gateway_patch))
    ],
    Endpoint(
        "POST", f"{GL}/fingerprints", create_fingerprint, "Add a fingerprint", {201: FingerprintView},
        errors=(400, 409), body=FingerprintBody, tag="gateway lite",
        description="32 hex digits, unique across all users (409 `duplicate_fingerprint`). Pushed to the caller's "
        "gateways (retained on `devices/<euid>/fingerprints`).",
    ),
    Endpoint(
        "GET", f"{GL}/fingerprints", list_fingerprints, "Your fingerprints", {200: FingerprintList},
        tag="gateway lite",
    ),
    Endpoint(
        "GET", f"{GL}/fingerprints/{{id}}", get_fingerprint, "One of your fingerprints", {200: FingerprintView},
        tag="gateway lite", path_params=ID,
    ),
    Endpoint(
        "DELETE", f"{GL}/fingerprints/{{id}}", delete_fingerprint, "Delete one of your fingerprints", {204: None},
        tag="gateway lite", path_params=ID, description="Your gateways' lists are updated.",
    ),
    Endpoint(
        "POST", f"{GL}/fingerprints/resync", resync_fingerprints, "Push fingerprints to your gateways again",
        {200: ResyncDetail}, errors=(400,), body=ResyncRequest, tag="gateway lite",
        description="No body: all of yours. `{\"fingerprints\": [...]}` (values, or ids without hyphens): those, "
        "also sent on `devices/<euid>/fingerprints/resync`; 400 `unknown_fingerprint` names any that is not yours.",
    ),
]
# fmt: on
