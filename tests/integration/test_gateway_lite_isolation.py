"""Gateway Lite's tenancy matrix, generated: users of other customers and partners x customer A's
gateway, fingerprint and its partner's import, product and integration key x every route naming them.

Out of view answers exactly like an id nobody has (same status and body once the id is blanked out)
and no row of the Gateway Lite tables changes. Two answers are the same for everyone by design (the
spec's): acquiring an acquired euid is 400 `already_acquired`, and a fingerprint is unique across
users (409). Lists leave A's objects out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.gateway_lite import csv_bytes, finished, gateway_rows, product, upload
from tests.integration.test_tenants import ALL, MISSING, Tenants
from tests.matrix import run_matrix, snapshot
from tests.support import Api, Server, make_server

GL = "/integrations/gateway_lite"
TABLES = ("devices", "gateway_lites", "fingerprints", "gateway_lite_imports", "products", "integration_keys")
MISSING_DEVICE = str(2**31 - 1)
# (case, method, path, body); {uuid} {device} {fp} {fphex} {import} {product} {partner} {euid} {value}
ROUTES: list[tuple[str, str, str, Any]] = [
    ("hidden", "GET", "/devices/{device}/", None),
    ("hidden", "GET", "/devices/{uuid}/", None),
    ("hidden", "PUT", "/devices/{uuid}/release/", None),
    ("hidden", "PATCH", "/devices/{device}/release/", None),
    ("hidden", "GET", f"{GL}/fingerprints/{{fp}}", None),
    ("hidden", "DELETE", f"{GL}/fingerprints/{{fp}}", None),
    ("hidden", "POST", f"{GL}/fingerprints/resync", {"fingerprints": ["{fphex}"]}),
    ("hidden", "GET", f"{GL}/import/{{import}}", None),
    ("hidden", "DELETE", f"{GL}/import/{{import}}", None),
    ("hidden", "GET", "/products/{product}/", None),
    ("hidden", "PATCH", "/products/{product}/", {"name": "taken over"}),
    ("hidden", "DELETE", "/products/{product}/", None),
    ("hidden", "GET", "/partners/{partner}/integration_key/", None),
    ("hidden", "POST", "/partners/{partner}/integration_key/rotate", None),
    ("acquired", "POST", f"{GL}/acquire", {"euid": "{euid}"}),
    ("unique", "POST", f"{GL}/fingerprints", {"fingerprint": "{value}"}),
    ("list", "GET", "/devices/?limit=1000", None),
    ("list", "GET", f"{GL}/fingerprints", None),
]
EXPECTED_CASES = 5 * len(ROUTES)


@dataclass(frozen=True)
class Case:
    role: str
    api: Api
    case: str
    method: str
    path: str
    body: Any
    objects: dict[str, str]

    def fill(self, value: Any, objects: dict[str, str]) -> Any:
        text = json.dumps(value)
        for name, ident in objects.items():
            text = text.replace("{" + name + "}", ident)
        return json.loads(text)

    def __str__(self) -> str:
        return f"{self.role} {self.method} {self.path}"


@pytest.fixture(scope="module")
def iso_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("gatehouse-gwl-isolation"))
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


MISSING_OBJECTS = {
    "device": MISSING_DEVICE, "uuid": MISSING, "fp": MISSING, "fphex": MISSING.replace("-", ""),
    "import": MISSING, "product": MISSING, "partner": MISSING,
}  # fmt: skip


def _blank(body: Any, objects: dict[str, str]) -> str:
    text = json.dumps(body, sort_keys=True)
    for name in MISSING_OBJECTS:
        text = re.sub(rf"\b{re.escape(objects[name])}\b", "ID", text)
    return text


async def check(case: Case) -> str | None:
    path, body = case.fill(case.path, case.objects), case.fill(case.body, case.objects)
    status, answer = await case.api.call(case.method, path, body)
    if case.case == "list":
        text = json.dumps(answer)
        leaked = [n for n in ("euid", "value", "fp") if case.objects[n] in text]
        return None if status == 200 and not leaked else f"{status}, shows {leaked}: {answer}"
    if case.case == "acquired":
        return None if (status, answer.get("code")) == (400, "already_acquired") else f"{status}: {answer}"
    if case.case == "unique":
        return None if (status, answer.get("code")) == (409, "duplicate_fingerprint") else f"{status}: {answer}"
    missing = {**case.objects, **MISSING_OBJECTS}
    m_status, m_answer = await case.api.call(case.method, case.fill(case.path, missing), case.fill(case.body, missing))
    if (status, _blank(answer, case.objects)) != (m_status, _blank(m_answer, missing)):
        return f"differs from a missing id: {status} {answer} vs {m_status} {m_answer}"
    return None if status in (400, 403, 404) else f"{status}: {answer}"


async def test_gateway_lite_isolation_matrix(iso_server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        admin = Api(http, iso_server.url)
        await admin.login("admin@example.com")
        t = Tenants(iso_server, http, admin)
        p1, p2 = await t.partner("P1", is_gateway_lite_provider=True), await t.partner("P2")
        a, b, c = await t.customer(p1, "A"), await t.customer(p1, "B"), await t.customer(p2, "C")
        importer = await t.user("partner", p1, ALL)
        owner = await t.user("customer", a, ALL)
        product_id = await product(importer)
        rows = gateway_rows(2)
        status, rec = await upload(importer, csv_bytes(rows), product_id)
        assert status == 201, rec
        assert (await finished(importer, rec["id"]))["status"] == "completed"
        status, acquired = await owner.call("POST", f"{GL}/acquire", {"euid": rows[0][0]})
        assert status == 200, acquired
        status, seen = await owner.call("GET", f"/devices/{acquired['uuid']}/")
        assert status == 200, seen
        status, fp = await owner.call("POST", f"{GL}/fingerprints", {"fingerprint": "5a" * 16})
        assert status == 201, fp
        status, _ = await admin.call("GET", f"/partners/{p1['id']}/integration_key/")
        assert status == 200
        objects = {
            "device": str(seen["id"]), "uuid": acquired["uuid"], "fp": fp["id"], "fphex": fp["id"].replace("-", ""),
            "import": rec["id"], "product": product_id, "partner": p1["id"], "euid": rows[0][0],
            "value": fp["fingerprint"],
        }  # fmt: skip
        roles = {
            "B-all (same partner)": await t.user("customer", b, ALL),
            "B-none": await t.user("customer", b),
            "C-all (other partner)": await t.user("customer", c, ALL),
            "P2-all": await t.user("partner", p2, ALL),
            "alice (no tenant)": await _alice(iso_server, http),
        }
        cases = [
            Case(name, api, case, method, path, body, objects)
            for name, api in roles.items()
            for case, method, path, body in ROUTES
        ]
        print(f"gateway lite isolation matrix: {len(cases)} cases")
        assert len(cases) == EXPECTED_CASES
        before = await snapshot(iso_server, TABLES)
        assert before["gateway_lites"] and before["fingerprints"] and before["integration_keys"]
        await run_matrix(iso_server, TABLES, cases, check)
        # the owner still has everything
        status, listed = await owner.call("GET", f"{GL}/fingerprints")
        assert status == 200 and [f["id"] for f in listed] == [fp["id"]], listed


async def _alice(server: Server, http: aiohttp.ClientSession) -> Api:
    api = Api(http, server.url)
    await api.login("alice@example.com")
    return api
