"""Test support for the Hardware API: JSON headers on every call, a registered accessory."""

from __future__ import annotations

import itertools
from typing import Any

from tests.support import Api

JSON = {"Accept": "application/json"}
PASSWORD = "ffqkjhrqdkha2"
_macs = itertools.count(0x10)


def new_mac(prefix: int = 0x02) -> str:
    """A fresh locally administered MAC address (canonical form)."""
    n = next(_macs)
    return ":".join(f"{b:02x}" for b in (prefix, 0x1D, 0x3A, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))


async def hw(api: Api, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    """A Hardware API call with `Accept: application/json` (the client's JSON body sets Content-Type)."""
    headers = {**JSON, **kw.pop("headers", {})}
    return await api.call(method, "/v1" + path, body, headers=headers, **kw)


def registration(**fields: Any) -> dict[str, Any]:
    return {
        "password": PASSWORD,
        "hardware_model": "Model T",
        "firmware_version": "1.0",
        "settings_key": "123456",
        **fields,
    }


async def register(api: Api, mac: str | None = None, **fields: Any) -> dict[str, Any]:
    status, body = await hw(api, "POST", f"/accessory/{mac or new_mac()}/register", registration(**fields))
    assert status == 201, body
    return body


async def accessory_token(api: Api, mac: str, password: str = PASSWORD) -> str:
    status, body = await hw(api, "POST", f"/accessory/{mac}/login", {"password": password}, auth=False)
    assert status == 200, body
    return body["access_token"]
