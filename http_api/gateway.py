"""/gateway: the ESP32 device gateway (spec/device-gateway.md) plus device management."""

from __future__ import annotations

from aiohttp import web

from handlers import commands, devices, provisioning, telemetry
from handlers.devices import authenticate_api_key
from handlers.envelope import Envelope
from http_api.state import (
    base_url,
    bearer,
    ctx_of,
    parse_body,
    parse_query,
    path_id,
    principal,
    raw_json_body,
)


async def create_device(request: web.Request) -> web.Response:
    who = await principal(request)
    req = await parse_body(request, devices.CreateDevice)
    return web.json_response(await devices.create_device(who, req), status=201)


async def list_devices(request: web.Request) -> web.Response:
    return web.json_response(await devices.list_devices(await principal(request)))


async def get_device(request: web.Request) -> web.Response:
    return web.json_response(await devices.get_device(await principal(request), path_id(request)))


async def delete_device(request: web.Request) -> web.Response:
    effects = await devices.delete_device(await principal(request), path_id(request))
    await ctx_of(request).effector.apply(effects)
    return web.Response(status=204)


async def provision(request: web.Request) -> web.Response:
    who = await principal(request)
    req = await parse_body(request, provisioning.ProvisionRequest)
    return web.json_response(await provisioning.issue_token(who, path_id(request), req), status=201)


async def claim(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    req = await parse_body(request, provisioning.ClaimRequest)
    body, effects = await provisioning.claim_device(
        ctx, req, source="http", remote=request.remote or "", base_url=base_url(request)
    )
    await ctx.effector.apply(effects)
    return web.json_response(body)


async def ingest(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    identity = await authenticate_api_key(bearer(request))
    env = Envelope(
        source="http",
        topic=telemetry.telemetry_topic(identity.username),
        identity=identity,
        payload=await raw_json_body(request),
        qos=1,
        remote=request.remote or "",
    )
    await ctx.effector.apply(await telemetry.ingest_telemetry(ctx, env))
    return web.json_response({"status": "ok"})


async def latest(request: web.Request) -> web.Response:
    return web.json_response(await telemetry.latest(await principal(request), path_id(request)))


async def history(request: web.Request) -> web.Response:
    who = await principal(request)
    q = parse_query(request, telemetry.HistoryQuery)
    return web.json_response(await telemetry.history(ctx_of(request), who, path_id(request), q))


async def claims(request: web.Request) -> web.Response:
    return web.json_response(await devices.list_claims(await principal(request), path_id(request)))


async def send_command(request: web.Request) -> web.Response:
    who = await principal(request)
    req = await parse_body(request, commands.CommandRequest)
    body = await commands.send_command(ctx_of(request), who, path_id(request), req)
    # 202 while the device has not answered (timeout 0, or the wait ran out); 200 once it is final.
    return web.json_response(body, status=202 if body["status"] == "pending" else 200)


async def list_commands(request: web.Request) -> web.Response:
    who = await principal(request)
    q = parse_query(request, commands.CommandQuery)
    return web.json_response(await commands.list_commands(who, path_id(request), q))


async def get_command(request: web.Request) -> web.Response:
    who = await principal(request)
    return web.json_response(await commands.get_command(who, path_id(request), request.match_info["req_id"]))


ROUTES = [
    web.post("/gateway/devices", create_device),
    web.get("/gateway/devices", list_devices),
    web.post("/gateway/devices/claim", claim),
    web.get("/gateway/devices/{id:[0-9]+}", get_device),
    web.delete("/gateway/devices/{id:[0-9]+}", delete_device),
    web.post("/gateway/devices/{id:[0-9]+}/provision", provision),
    web.get("/gateway/devices/{id:[0-9]+}/claims", claims),
    web.get("/gateway/devices/{id:[0-9]+}/telemetry/latest", latest),
    web.get("/gateway/devices/{id:[0-9]+}/telemetry", history),
    web.post("/gateway/devices/{id:[0-9]+}/commands", send_command),
    web.get("/gateway/devices/{id:[0-9]+}/commands", list_commands),
    web.get("/gateway/devices/{id:[0-9]+}/commands/{req_id}", get_command),
    web.post("/gateway/device-data/ingest", ingest),
]
