"""/gateway: the ESP32 device gateway (spec/device-gateway.md) plus device management."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers import commands, devices, provisioning, telemetry
from handlers.accounts import Principal
from handlers.commands import CommandList, CommandQuery, CommandRequest, CommandView
from handlers.devices import ClaimList, CreateDevice, DeviceList, DeviceView
from handlers.envelope import Envelope, Identity
from handlers.provisioning import ClaimRequest, ClaimResponse, ProvisioningTokenView, ProvisionRequest
from handlers.telemetry import History, HistoryQuery, IngestAck, Latest, TelemetryPayload
from http_api.endpoint import Endpoint, Reply
from http_api.state import ctx_of, path_id, raw_json_body

DEVICE = "/gateway/devices/{id:[0-9]+}"


async def create_device(request: web.Request, who: Principal, body: CreateDevice) -> dict[str, object]:
    return await devices.create_device(who, body)


async def list_devices(request: web.Request, who: Principal) -> dict[str, object]:
    return await devices.list_devices(who)


async def get_device(request: web.Request, who: Principal) -> dict[str, object]:
    return await devices.get_device(who, path_id(request))


async def delete_device(request: web.Request, who: Principal) -> None:
    effects = await devices.delete_device(who, path_id(request))
    await ctx_of(request).effector.apply(effects)


async def revoke_api_key(request: web.Request, who: Principal) -> None:
    effects = await devices.revoke_api_key(who, path_id(request))
    await ctx_of(request).effector.apply(effects)


async def provision(request: web.Request, who: Principal, body: ProvisionRequest) -> dict[str, object]:
    return await provisioning.issue_token(who, path_id(request), body, ctx_of(request).links)


async def claim(request: web.Request, body: ClaimRequest) -> dict[str, object]:
    ctx = ctx_of(request)
    reply, effects = await provisioning.claim_device(ctx, body, source="http", remote=request.remote or "")
    await ctx.effector.apply(effects)
    return reply


async def ingest(request: web.Request, device: Identity) -> dict[str, object]:
    ctx = ctx_of(request)
    env = Envelope(
        source="http",
        topic=telemetry.telemetry_topic(device.username),
        identity=device,
        payload=await raw_json_body(request),
        qos=1,
        remote=request.remote or "",
    )
    await ctx.effector.apply(await telemetry.ingest_telemetry(ctx, env))
    return {"status": "ok"}


async def latest(request: web.Request, who: Principal) -> dict[str, object]:
    return await telemetry.latest(who, path_id(request))


async def history(request: web.Request, who: Principal, query: HistoryQuery) -> dict[str, object]:
    return await telemetry.history(ctx_of(request), who, path_id(request), query)


async def claims(request: web.Request, who: Principal) -> dict[str, object]:
    return await devices.list_claims(who, path_id(request))


async def send_command(request: web.Request, who: Principal, body: CommandRequest) -> dict[str, Any] | Reply:
    reply = await commands.send_command(ctx_of(request), who, path_id(request), body)
    # 202 while the device has not answered (timeout 0, or the wait ran out); 200 once it is final.
    return Reply(reply, 202) if reply["status"] == "pending" else reply


async def list_commands(request: web.Request, who: Principal, query: CommandQuery) -> dict[str, Any]:
    return await commands.list_commands(who, path_id(request), query)


async def get_command(request: web.Request, who: Principal) -> dict[str, Any]:
    return await commands.get_command(who, path_id(request), request.match_info["req_id"])


ENDPOINTS = [
    Endpoint(
        "POST",
        "/gateway/devices",
        create_device,
        "Register a device",
        {201: DeviceView},
        errors=(403, 409),
        body=CreateDevice,
        tag="devices",
        description="409 `duplicate_username` when the MQTT username is taken. 403 `permission_denied`: a "
        "partner or customer user without `add_device`.",
    ),
    Endpoint(
        "GET",
        "/gateway/devices",
        list_devices,
        "The caller's devices (gooee: all)",
        {200: DeviceList},
        tag="devices",
    ),
    Endpoint(
        "POST",
        "/gateway/devices/claim",
        claim,
        "Claim a device with its one-time token: its API key",
        {200: ClaimResponse},
        errors=(404, 409, 410),
        auth=None,
        body=ClaimRequest,
        tag="provisioning",
        description="404 `token_unknown`, 409 `token_used`, 410 `token_expired`. Of racing claims exactly one wins.",
    ),
    Endpoint("GET", DEVICE, get_device, "One device", {200: DeviceView}, errors=(404,), tag="devices"),
    Endpoint(
        "DELETE",
        DEVICE,
        delete_device,
        "Delete a device; its MQTT connections are closed",
        {204: None},
        errors=(403, 404),
        tag="devices",
        description="403 `permission_denied`: a partner or customer user without `delete_device` "
        "deleting a device they did not create.",
    ),
    Endpoint(
        "POST",
        f"{DEVICE}/provision",
        provision,
        "Issue a one-time provisioning token",
        {201: ProvisioningTokenView},
        errors=(403, 404),
        body=ProvisionRequest,
        tag="provisioning",
        description="Without `lifetime_minutes` the token never expires. 403 `permission_denied`: a partner or "
        "customer user without `change_device`.",
    ),
    Endpoint(
        "DELETE",
        f"{DEVICE}/api_key",
        revoke_api_key,
        "Revoke the device's API key; its MQTT connections are closed",
        {204: None},
        errors=(403, 404, 409),
        tag="provisioning",
        description="Unused provisioning tokens of the device expire with it. A new provisioning token, once "
        "claimed, gives the device a new key (a claim always "
        "replaces the key). 409 `no_api_key`: the device has none, or its kind logs in otherwise (Gateway Lite, "
        "accessory). 403 `permission_denied`: a partner or customer user without `change_device`.",
    ),
    Endpoint(
        "GET",
        f"{DEVICE}/claims",
        claims,
        "The device's last 50 claims",
        {200: ClaimList},
        errors=(404,),
        tag="provisioning",
    ),
    Endpoint(
        "GET",
        f"{DEVICE}/telemetry/latest",
        latest,
        "The device's last sample",
        {200: Latest},
        errors=(404,),
        tag="telemetry",
    ),
    Endpoint(
        "GET",
        f"{DEVICE}/telemetry",
        history,
        "Telemetry history, newest first",
        {200: History},
        errors=(404,),
        query=HistoryQuery,
        tag="telemetry",
        description="`limit` is capped at `telemetry.history_page_max`; times without an offset are UTC.",
    ),
    Endpoint(
        "POST",
        f"{DEVICE}/commands",
        send_command,
        "Send a command to the device (docs/commands.md)",
        {200: CommandView, 202: CommandView},
        errors=(403, 404),
        body=CommandRequest,
        tag="commands",
        description="202 while the device has not answered (timeout 0, or the wait ran out); 200 once it did. "
        "403 `permission_denied`: a partner or customer user without `change_device`.",
    ),
    Endpoint(
        "GET",
        f"{DEVICE}/commands",
        list_commands,
        "The device's commands, newest first",
        {200: CommandList},
        errors=(404,),
        query=CommandQuery,
        tag="commands",
    ),
    Endpoint(
        "GET",
        f"{DEVICE}/commands/{{req_id}}",
        get_command,
        "One command",
        {200: CommandView},
        errors=(404,),
        tag="commands",
        description="404 `command_not_found` for an unknown `req_id`.",
    ),
    Endpoint(
        "POST",
        "/gateway/device-data/ingest",
        ingest,
        "Send a telemetry sample as the device",
        {200: IngestAck},
        auth="device",
        raw_body=TelemetryPayload,
        tag="telemetry",
        description="The same pipeline as a publish on `devices/<username>/telemetry`; answered once committed.",
    ),
]
