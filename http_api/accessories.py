"""/v1/accessory: the Hardware API's accessories (spec/hardware-accessory.md); rules in handlers/accessories."""

from __future__ import annotations

from aiohttp import web

from handlers import accessories
from handlers.accessories import (
    AccessoryLogin,
    AccessoryToken,
    AccessoryView,
    Caller,
    RegisterAccessory,
    UpdateAccessory,
)
from http_api.endpoint import Endpoint
from http_api.state import client_address, ctx_of

ACCESSORY = "/v1/accessory/{mac_address}"
MAC = {"mac_address": "six hex octets, `:` or `-` separated or not at all, any case (`1d:3a:42:5d:a5:ea`)"}
COMMON = (
    "Every /v1/ request must send `Accept: application/json` (and `Content-Type: application/json` with a body): "
    "415 otherwise."
)


def _mac(request: web.Request) -> str:
    return request.match_info["mac_address"]


async def register_accessory(request: web.Request, who: Caller, body: RegisterAccessory) -> dict[str, object]:
    return await accessories.register(who, _mac(request), body)


async def login_accessory(request: web.Request, body: AccessoryLogin) -> dict[str, object]:
    return await accessories.login(ctx_of(request), _mac(request), body, address=client_address(request))


async def get_accessory(request: web.Request, who: Caller) -> dict[str, object]:
    return await accessories.get_accessory(who, _mac(request))


async def update_accessory(request: web.Request, who: Caller, body: UpdateAccessory) -> dict[str, object]:
    return await accessories.update_accessory(who, _mac(request), body)


async def delete_accessory(request: web.Request, who: Caller) -> dict[str, object]:
    view, effects = await accessories.delete_accessory(who, _mac(request))
    await ctx_of(request).effector.apply(effects)
    return view


# fmt: off
ENDPOINTS = [
    Endpoint(
        "POST", f"{ACCESSORY}/register", register_accessory, "Register an accessory by its MAC address",
        {201: AccessoryView}, errors=(400, 403, 409, 415), auth="hardware", body=RegisterAccessory, tag="accessories",
        path_params=MAC,
        description="The registering user owns it (their tenant sees it; tenant users need `add_device`). 409 with "
        "`Status: DuplicateMacAddress` when the MAC is registered in any spelling; 400 `Status: InvalidSchema` for a "
        "malformed MAC or body. An accessory's own token is 403. " + COMMON,
    ),
    Endpoint(
        "POST", f"{ACCESSORY}/login", login_accessory, "The accessory's access token, for its password",
        {200: AccessoryToken}, errors=(400, 415, 429), auth=None, body=AccessoryLogin, tag="accessories",
        path_params=MAC,
        description="A wrong password and an unknown MAC are the same 401 `invalid_credentials`; failures are "
        "rate limited (`limits.accessory_login`). The token opens this accessory's /v1/ routes and is its MQTT "
        "password. " + COMMON,
    ),
    Endpoint(
        "GET", ACCESSORY, get_accessory, "One accessory",
        {200: AccessoryView}, errors=(400, 404, 415), auth="hardware", tag="accessories", path_params=MAC,
        description="For the accessory itself and the users who see its owner's devices; anyone else 404. " + COMMON,
    ),
    Endpoint(
        "PATCH", ACCESSORY, update_accessory, "Change an accessory's firmware_version or settings_key",
        {200: AccessoryView}, errors=(400, 403, 404, 415), auth="hardware", body=UpdateAccessory, tag="accessories",
        path_params=MAC,
        description="By the accessory itself or its owner's tenant (`change_device`). `hardware_model` is "
        "immutable: 400 `Status: InvalidSchema`. " + COMMON,
    ),
    Endpoint(
        "DELETE", ACCESSORY, delete_accessory, "Delete an accessory: its credentials and MQTT connections go",
        {200: AccessoryView}, errors=(400, 403, 404, 415), auth="hardware", tag="accessories", path_params=MAC,
        description="By its owner's tenant (`delete_device` for an accessory they did not register); its own token "
        "is 403. Answers the record as it was (the Hardware API answers JSON, never an empty body). " + COMMON,
    ),
]
# fmt: on
