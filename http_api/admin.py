"""/admin: read-only lists for gooee users (handlers/admin.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers import admin
from handlers.accounts import Principal
from handlers.admin import AdminQuery, CredentialPage, SamplePage, TokenPage
from http_api.endpoint import Endpoint


async def admin_tokens(request: web.Request, who: Principal, query: AdminQuery) -> dict[str, Any]:
    return await admin.tokens(who, query)


async def admin_credentials(request: web.Request, who: Principal, query: AdminQuery) -> dict[str, Any]:
    return await admin.credentials(who, query)


async def admin_telemetry(request: web.Request, who: Principal, query: AdminQuery) -> dict[str, Any]:
    return await admin.samples(who, query)


GOOEE_ONLY = "gooee users only: anyone else 403 `permission_denied`. `search` matches the device's name or username."
ENDPOINTS = [
    Endpoint(
        "GET",
        "/admin/tokens",
        admin_tokens,
        "Issued provisioning tokens across tenants (never the tokens), newest first",
        {200: TokenPage},
        errors=(403,),
        query=AdminQuery,
        tag="admin",
        description=GOOEE_ONLY,
    ),
    Endpoint(
        "GET",
        "/admin/credentials",
        admin_credentials,
        "Device credentials across tenants: when issued, when last used",
        {200: CredentialPage},
        errors=(403,),
        query=AdminQuery,
        tag="admin",
        description=GOOEE_ONLY,
    ),
    Endpoint(
        "GET",
        "/admin/telemetry",
        admin_telemetry,
        "Telemetry samples across tenants, newest first",
        {200: SamplePage},
        errors=(403,),
        query=AdminQuery,
        tag="admin",
        description=GOOEE_ONLY,
    ),
]
