"""/auth and /me."""

from aiohttp import web

from handlers import accounts
from http_api.state import ctx_of, parse_body, principal


async def login(request: web.Request) -> web.Response:
    req = await parse_body(request, accounts.LoginRequest)
    return web.json_response(await accounts.login(ctx_of(request), req))


async def refresh(request: web.Request) -> web.Response:
    req = await parse_body(request, accounts.RefreshRequest)
    return web.json_response(await accounts.refresh(ctx_of(request), req))


async def logout(request: web.Request) -> web.Response:
    who = await principal(request)
    req = await parse_body(request, accounts.RefreshRequest)
    await accounts.logout(ctx_of(request), who, req)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    return web.json_response(await accounts.me(await principal(request)))


ROUTES = [
    web.post("/auth/login", login),
    web.post("/auth/refresh", refresh),
    web.post("/auth/logout", logout),
    web.get("/me", me),
]
