"""Test support for Gateway Lite: CSV files, uploads, waiting for an import, a provider with its key."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import aiohttp

from tests.support import Api, eventually

HEADER = '"Product Serial Number";"FW Code";"Nabto DeviceId";"InstallCode"'
_serials = itertools.count(1)


def new_euid() -> str:
    return f"02{uuid.uuid4().int % 10**8:08d}{next(_serials):06d}"


def gateway_rows(n: int) -> list[tuple[str, str, str, str]]:
    """n gateways: (euid, FW code, Nabto device id, installation code)."""
    out = []
    for _ in range(n):
        euid = new_euid()
        out.append((euid, "FW-1.2.3", f"nabto-{euid}", f"ic-{uuid.uuid4().hex[:16]}"))
    return out


def csv_bytes(rows: list[tuple[str, ...]], header: str = HEADER, delimiter: str = ";") -> bytes:
    lines = [header] + [delimiter.join(row) for row in rows]
    return ("\r\n".join(lines) + "\r\n").encode()


async def upload(
    api: Api, data: bytes, product_id: str, filename: str = "gateways.csv", **fields: Any
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("csv_file", data, filename=filename, content_type="text/csv")
    form.add_field("product_id", product_id)
    for name, values in fields.items():
        for value in values if isinstance(values, list) else [values]:
            form.add_field(name, value)
    return await api.call("POST", "/integrations/gateway_lite/import", data=form)  # type: ignore[arg-type]


async def finished(api: Api, import_id: str, timeout: float = 60) -> dict[str, Any]:
    """The import once it is completed or failed."""

    async def done() -> dict[str, Any] | None:
        status, body = await api.call("GET", f"/integrations/gateway_lite/import/{import_id}")
        assert status == 200, body
        return body if body["status"] in ("completed", "failed") else None

    return await eventually(done, timeout=timeout, interval=0.1)


async def product(api: Api, name: str = "Gateway Lite") -> str:
    status, body = await api.call("POST", "/products/", {"name": name})
    assert status == 201, body
    return body["id"]


async def provider(admin: Api, name: str = "Provider") -> tuple[dict[str, Any], str]:
    """A Gateway Lite provider partner and its integration key."""
    status, partner = await admin.call("POST", "/partners/", {"name": name, "is_gateway_lite_provider": True})
    assert status == 201, partner
    status, key = await admin.call("GET", f"/partners/{partner['id']}/integration_key/")
    assert status == 200, key
    return partner, key["integration_key"]
