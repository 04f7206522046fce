"""Test tenants in one place: partners, customers and user groups written straight into a server's
database (their REST routes are another part of issue 8), and users made through the users API.

`Tenants(server, admin)` wraps one running server and an admin client:
- `partner()`, `customer(partner)`, `group(permissions, partner=, customer=)` insert rows with SQL;
- `user(account_type, partner=, customer=, groups=)` creates a user with POST /users/, activates it
  with POST /users/{id}/activate/, and returns an `Api` logged in as them (with `.id`, `.username`).
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg

from tests.support import PASSWORD, Api, Server

_serial = itertools.count(1)


def unique(prefix: str = "u") -> str:
    return f"{prefix}{next(_serial)}-{uuid.uuid4().hex[:8]}"


def email(prefix: str = "user") -> str:
    return f"{unique(prefix)}@example.com"


async def execute(server: Server, sql: str, *args: Any) -> None:
    """Run one writing statement on the server's database (`?` placeholders), bypassing the server.

    Arguments are given in PostgreSQL's types (uuid.UUID, datetime, bool); SQLite gets them as Tortoise
    stores them there (text, text, int)."""
    url = server.database_url
    if url.startswith("sqlite://"):
        conn = sqlite3.connect(url.removeprefix("sqlite://"), timeout=15)
        try:
            conn.execute(sql, [_sqlite(a) for a in args])
            conn.commit()
        finally:
            conn.close()
        return
    numbered = iter(range(1, sql.count("?") + 1))
    pg = await asyncpg.connect(url)
    try:
        await pg.execute(re.sub(r"\?", lambda _: f"${next(numbered)}", sql), *args)
    finally:
        await pg.close()


def _sqlite(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return str(value)  # "2026-12-02 19:26:00.421122+00:00", as Tortoise writes it
    if isinstance(value, bool):
        return int(value)
    return value


class Tenants:
    def __init__(self, server: Server, admin: Api) -> None:
        self.server = server
        self.admin = admin

    async def partner(self, name: str = "") -> str:
        pid, now = uuid.uuid4(), datetime.now(UTC)
        await execute(
            self.server,
            "INSERT INTO partners (id, created, modified, name, is_gateway_lite_provider) VALUES (?, ?, ?, ?, ?)",
            pid, now, now, name or unique("partner"), False,
        )  # fmt: skip
        return str(pid)

    async def customer(self, partner: str, name: str = "") -> str:
        cid, now = uuid.uuid4(), datetime.now(UTC)
        await execute(
            self.server,
            "INSERT INTO customers (id, created, modified, name, partner_id) VALUES (?, ?, ?, ?, ?)",
            cid, now, now, name or unique("customer"), uuid.UUID(partner),
        )  # fmt: skip
        return str(cid)

    async def group(self, permissions: list[str], *, partner: str | None = None, customer: str | None = None) -> str:
        gid, now = uuid.uuid4(), datetime.now(UTC)
        await execute(
            self.server,
            "INSERT INTO user_groups (id, created, modified, name, permissions, partner_id, customer_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            gid, now, now, unique("group"), json.dumps(sorted(permissions)),
            uuid.UUID(partner) if partner else None, uuid.UUID(customer) if customer else None,
        )  # fmt: skip
        return str(gid)

    async def new_user(
        self,
        account_type: str,
        *,
        partner: str | None = None,
        customer: str | None = None,
        groups: list[str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A user made by the admin with POST /users/ (pending); its view."""
        body = {
            "username": email(account_type),
            "account_type": account_type,
            "first_name": "Test",
            "last_name": "User",
            **({"partner": partner} if partner else {}),
            **({"customer": customer} if customer else {}),
            **({"user_groups": groups} if groups else {}),
            **fields,
        }
        status, view = await self.admin.call("POST", "/users/", body)
        assert status == 201, view
        return view

    async def user(
        self,
        account_type: str,
        *,
        http: aiohttp.ClientSession,
        partner: str | None = None,
        customer: str | None = None,
        groups: list[str] | None = None,
    ) -> Api:
        """An active user with PASSWORD, logged in."""
        view = await self.new_user(account_type, partner=partner, customer=customer, groups=groups, password=PASSWORD)
        status, body = await self.admin.call("POST", f"/users/{view['id']}/activate/")
        assert status == 200, body
        api = Api(http, self.server.url)
        await api.login(view["username"])
        api.id = view["id"]  # type: ignore[attr-defined]
        api.username = view["username"]  # type: ignore[attr-defined]
        return api
