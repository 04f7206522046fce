"""Gateway Lite's rules and bad paths against a real server: integration keys, self-registration and
activation, every bad CSV, acquire (QR forms, the race), fingerprints, MQTT for gateways."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator

import aiohttp
import pytest

from tests.gateway_lite import HEADER, csv_bytes, finished, gateway_rows, new_euid, product, provider, upload
from tests.integration.test_tenants import ALL, Tenants
from tests.mqtt import Client
from tests.smtp import SmtpSink
from tests.support import PASSWORD, Api, Server, eventually, fetch, make_server

GL = "/integrations/gateway_lite"
REFUSED = 0x87  # paho 2.x's reason code for CONNACK return code 5


def signup(key: str, email: str, **fields: object) -> dict[str, object]:
    return {"integration_key": key, "first_name": "Bob", "last_name": "Bobsen", "email": email,
            "password": PASSWORD, "password_confirm": PASSWORD, **fields}  # fmt: skip


async def imported(admin: Api, n: int = 1) -> list[tuple[str, str, str, str]]:
    rows = gateway_rows(n)
    status, rec = await upload(admin, csv_bytes(rows), await product(admin))
    assert status == 201, rec
    assert (await finished(admin, rec["id"]))["status"] == "completed"
    return rows


# --- integration keys ------------------------------------------------------------------------------


async def test_integration_key_access_and_rotation(server: Server, admin: Api, http: aiohttp.ClientSession) -> None:
    t = Tenants(server, http, admin)
    partner, key = await provider(admin)
    plain = await t.partner("not a provider")
    status, body = await admin.call("GET", f"/partners/{plain['id']}/integration_key/")
    assert status == 404 and body["code"] == "not_a_gateway_lite_provider", body
    status, again = await admin.call("GET", f"/partners/{partner['id']}/integration_key/")
    assert status == 200 and again["integration_key"] == key, again  # stable until rotated

    own = await t.user("partner", partner)
    status, body = await own.call("GET", f"/partners/{partner['id']}/integration_key/")
    assert status == 200 and body["integration_key"] == key, body
    other = await t.user("partner", await t.partner("other"), ALL)
    customer = await t.user("customer", await t.customer(partner), ALL)
    for api in (other, customer):
        for method, path in (("GET", "integration_key/"), ("POST", "integration_key/rotate")):
            status, body = await api.call(method, f"/partners/{partner['id']}/{path}")
            assert status == 404, (method, path, body)
    status, body = await admin.call("GET", "/partners/00000000-0000-4000-8000-000000000000/integration_key/")
    assert status == 404, body

    status, fresh = await admin.call("POST", "/partners/", {"name": "first reads", "is_gateway_lite_provider": True})
    assert status == 201, fresh
    keys = await asyncio.gather(*[admin.call("GET", f"/partners/{fresh['id']}/integration_key/") for _ in range(6)])
    assert len({k["integration_key"] for _, k in keys}) == 1, keys  # all answer the one key made
    status, rotated = await own.call("POST", f"/partners/{partner['id']}/integration_key/rotate")
    assert status == 200 and rotated["integration_key"] != key, rotated
    status, body = await admin.call("POST", f"{GL}/users/register/", signup(key, "old-key@example.com"), auth=False)
    assert status == 400 and body["code"] == "invalid_integration_key", body
    new = signup(rotated["integration_key"], "new-key@example.com")
    status, body = await admin.call("POST", f"{GL}/users/register/", new, auth=False)
    assert status == 201, body
    rows = await fetch(server, "SELECT account_type, account_status, customer_id FROM users WHERE username = ?",
                       "new-key@example.com")  # fmt: skip
    assert rows and rows[0][0] == "customer" and rows[0][1] == "pending" and rows[0][2], rows
    # a provider that stops being one: its key no longer registers anyone
    status, _ = await admin.call("PATCH", f"/partners/{partner['id']}/", {"is_gateway_lite_provider": False})
    assert status == 200
    late = signup(rotated["integration_key"], "too-late@example.com")
    status, body = await admin.call("POST", f"{GL}/users/register/", late, auth=False)
    assert status == 400 and body["code"] == "invalid_integration_key", body


# --- self-registration and activation -------------------------------------------------------------


async def test_registration_refusals_write_nothing(server: Server, admin: Api) -> None:
    _, key = await provider(admin)
    status, _ = await admin.call("POST", f"{GL}/users/register/", signup(key, "taken@example.com"), auth=False)
    assert status == 201
    cases = {
        "no integration_key": ({k: v for k, v in signup(key, "a1@example.com").items() if k != "integration_key"},
                               "integration_key"),
        "no first_name": ({k: v for k, v in signup(key, "a2@example.com").items() if k != "first_name"}, "first_name"),
        "no email": ({k: v for k, v in signup(key, "x").items() if k != "email"}, "email"),
        "no password": ({k: v for k, v in signup(key, "a3@example.com").items() if k != "password"}, "password"),
        "bad email": (signup(key, "not-an-email"), "email"),
        "mismatch": (signup(key, "a4@example.com", password_confirm=PASSWORD + "x"), "password_confirm"),
        "weak password": (signup(key, "a5@example.com", password="short", password_confirm="short"), "password"),
        "unknown key": (signup("nope" * 10, "a6@example.com"), "integration_key"),
        "email registered": (signup(key, "taken@example.com"), "email"),
        "email registered, other case": (signup(key, "TAKEN@example.com"), "email"),
        "blank first name": (signup(key, "a7@example.com", first_name="  "), "first_name"),
    }  # fmt: skip
    before = await fetch(server, "SELECT COUNT(*) FROM users")
    customers = await fetch(server, "SELECT COUNT(*) FROM customers")
    for name, (body, field) in cases.items():
        status, answer = await admin.call("POST", f"{GL}/users/register/", body, auth=False)
        assert status == 400, (name, answer)
        assert field in [e["field"] for e in answer["errors"]], (name, answer)
    assert await fetch(server, "SELECT COUNT(*) FROM users") == before
    assert await fetch(server, "SELECT COUNT(*) FROM customers") == customers
    for raw in (b"[]", b"not json", b'"x"'):
        status, answer = await admin.call("POST", f"{GL}/users/register/", data=raw,
                                          headers={"Content-Type": "application/json"}, auth=False)  # fmt: skip
        assert status == 400, (raw, answer)


@pytest.mark.parametrize("token", ["12345", "1234567", "abcdef", "12 345", "", "١٢٣٤٥٦"])
async def test_activation_token_malformed(server: Server, admin: Api, token: str) -> None:
    status, body = await admin.call("POST", f"{GL}/users/activate/", {"activation_token": token}, auth=False)
    assert status == 400, body


async def test_activation_unknown_and_wrong_type(server: Server, admin: Api) -> None:
    status, body = await admin.call("POST", f"{GL}/users/activate/", {"activation_token": "000000"}, auth=False)
    assert status in (404, 429), body  # 429 only if this run's other tests spent the shared budget
    for body in ({}, {"activation_token": 123456}, {"activation_token": None}):
        status, answer = await admin.call("POST", f"{GL}/users/activate/", body, auth=False)
        assert status == 400, (body, answer)


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory, smtpd: SmtpSink) -> Iterator[Server]:
    """Six failed activations per hour for the whole flow; mail to smtpd."""
    from tests.support import mail_env

    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-gwl-limits"),
        **mail_env(smtpd.port),
        GATEHOUSE_LIMITS__GATEWAY_LITE_ACTIVATION__PER_ACCOUNT="6 per hour",
        GATEHOUSE_LIMITS__GATEWAY_LITE_ACTIVATION__PER_ADDRESS="",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


async def test_activation_guessing_is_limited_and_tokens_are_one_time(
    limited_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession
) -> None:
    admin = Api(http, limited_server.url)
    await admin.login("admin@example.com")
    _, key = await provider(admin)
    email = "guess-target@example.com"
    status, _ = await admin.call("POST", f"{GL}/users/register/", signup(key, email), auth=False)
    assert status == 201
    token = re.search(r"\b(\d{6})\b", (await smtpd.wait_for(email))[-1].body).group(1)  # type: ignore[union-attr]

    # concurrent activations with the one token: exactly one succeeds
    answers = await asyncio.gather(*[
        admin.call("POST", f"{GL}/users/activate/", {"activation_token": token}, auth=False) for _ in range(4)
    ])  # fmt: skip
    assert sorted(s for s, _ in answers).count(200) == 1, answers

    # three failures so far (the race's losers); three wrong guesses spend the rest of the budget
    wrong = [f"{(int(token) + i) % 10**6:06d}" for i in range(1, 4)]
    for guess in wrong:
        status, body = await admin.call("POST", f"{GL}/users/activate/", {"activation_token": guess}, auth=False)
        assert status == 404, body
    status, body = await admin.call("POST", f"{GL}/users/activate/", {"activation_token": "999999"}, auth=False)
    assert status == 429 and "Retry-After" in admin.last_headers, body


# --- the CSV import --------------------------------------------------------------------------------


def _bad_files() -> dict[str, tuple[bytes, str]]:
    good = gateway_rows(3)
    dup = gateway_rows(2)
    many_bad = [(new_euid(), "", "n", "c") for _ in range(120)]
    return {
        "wrong header": (csv_bytes(good, header='"Serial";"FW Code";"Nabto DeviceId";"InstallCode"'), "line 1"),
        "header unquoted is fine but missing a column": (
            csv_bytes([r[:3] for r in good], header='"Product Serial Number";"FW Code";"Nabto DeviceId"'),
            "line 1",
        ),
        "comma delimiter": (csv_bytes(good, header=HEADER.replace(";", ","), delimiter=","), "delimiter"),
        "duplicate euid in the file": (csv_bytes([*dup, dup[0]]), "line 4: euid"),
        "empty field": (csv_bytes([good[0], (good[1][0], "", good[1][2], good[1][3])]), "line 3: empty FW Code"),
        "too few fields": (csv_bytes([good[0], good[1][:3]]), "line 3: 3 fields"),
        "too many fields": (csv_bytes([good[0], (*good[1], "extra")]), "line 3: 5 fields"),
        "not UTF-8": (csv_bytes(good)[:-10] + b"\xff\xfe\xfa\r\n", "not UTF-8"),
        "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not"),
        "empty file": (b"", "line 1"),
        "header only": ((HEADER + "\r\n").encode(), "no rows"),
        "bad euid": (csv_bytes([("bad/euid", "fw", "n", "c")]), "line 2: Product Serial Number"),
        "unbalanced quote": (csv_bytes(good).replace(good[1][0].encode(), b'"' + good[1][0].encode()), "line"),
        "120 bad rows": (csv_bytes(many_bad), "... and 20 more"),
    }


async def test_bad_files_fail_whole_and_write_nothing(server: Server, admin: Api) -> None:
    product_id = await product(admin)
    registered = (await imported(admin))[0]
    files = _bad_files()
    files["euid already registered"] = (csv_bytes([*gateway_rows(2), registered]), f"line 4: euid {registered[0]}")
    before = await fetch(server, "SELECT COUNT(*) FROM devices")
    for name, (data, mention) in files.items():
        status, rec = await upload(admin, data, product_id, filename=f"{name}.csv")
        assert status == 201, (name, rec)
        done = await finished(admin, rec["id"])
        assert done["status"] == "failed", (name, done)
        assert mention in done["error_message"], (name, done["error_message"])
        assert done["error_message"].count("\n") <= 100, name
        assert await fetch(server, "SELECT COUNT(*) FROM devices") == before, name


async def test_upload_refusals(server: Server, admin: Api, alice: Api, http: aiohttp.ClientSession) -> None:
    product_id = await product(admin)
    data = csv_bytes(gateway_rows(1))
    status, body = await upload(admin, data, "not-a-uuid")
    assert status == 400, body
    status, body = await upload(admin, data, "00000000-0000-4000-8000-000000000000")
    assert (status == 400 and body["code"] == "invalid_reference") or status == 404, body
    status, body = await upload(admin, data, product_id, tags=["x" * 51])
    assert status == 400, body
    status, body = await upload(admin, data, product_id, tags="[" * 60000)  # JSON nested past recursion
    assert status == 400, body
    status, body = await upload(admin, data, product_id, customer_scopes=["00000000-0000-4000-8000-000000000000"])
    assert status == 400 and body["errors"][0]["field"] == "customer_scopes", body
    status, body = await admin.call("POST", f"{GL}/import", {"product_id": product_id})
    assert status == 415, body
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("product_id", product_id)
    status, body = await admin.call("POST", f"{GL}/import", data=form)  # type: ignore[arg-type]
    assert status == 400 and body["errors"][0]["field"] == "csv_file", body
    form = aiohttp.FormData({"product_id": product_id})  # url-encoded: not multipart
    status, body = await admin.call("POST", f"{GL}/import", data=form)  # type: ignore[arg-type]
    assert status == 415, body
    status, body = await upload(alice, data, product_id)  # a user without a partner
    assert status == 403, body
    status, body = await admin.call("POST", f"{GL}/import", data=b"--x\r\ngarbage",
                                    headers={"Content-Type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert status == 400, body


async def test_import_record_list_and_delete(server: Server, admin: Api) -> None:
    product_id = await product(admin)
    rows = gateway_rows(2)
    status, rec = await upload(admin, csv_bytes(rows), product_id, tags=["a", "b"])
    assert status == 201
    done = await finished(admin, rec["id"])
    for key in ("id", "created", "modified", "csv_file", "product_id", "status", "customer_scopes",
                "partner_scopes", "error_message", "partner_id", "tags", "total_rows", "processed_rows"):  # fmt: skip
        assert key in done, key
    status, listed = await admin.call("GET", f"{GL}/import")
    assert status == 200 and rec["id"] in [r["id"] for r in listed["results"]], listed
    status, _ = await admin.call("DELETE", f"{GL}/import/{rec['id']}")
    assert status == 204
    status, _ = await admin.call("GET", f"{GL}/import/{rec['id']}")
    assert status == 404
    found = await fetch(server, "SELECT COUNT(*) FROM devices WHERE username IN (?, ?)", rows[0][0], rows[1][0])
    assert found[0][0] == 2  # the gateways stay


# --- acquire ---------------------------------------------------------------------------------------


async def test_acquire_forms_and_refusals(server: Server, admin: Api, alice: Api, bob: Api) -> None:
    rows = await imported(admin, 4)
    forms = [
        rows[0][0],
        f"https://qr.example.com/gw?euid={rows[1][0]}&v=1",
        json.dumps({"euid": rows[2][0], "model": "GL1"}),
        f"gatehouse://gateway-lite/{rows[3][0]}",
    ]
    for form in forms:
        status, body = await alice.call("POST", f"{GL}/acquire", {"euid": form})
        assert status == 200 and body["euid"] in form, (form, body)
    status, body = await bob.call("POST", f"{GL}/acquire", {"euid": rows[0][0]})
    assert status == 400 and body["code"] == "already_acquired", body
    status, body = await alice.call("POST", f"{GL}/acquire", {"euid": rows[0][0]})
    assert status == 400 and body["code"] == "already_acquired", body
    status, body = await alice.call("POST", f"{GL}/acquire", {"euid": new_euid()})
    assert status == 404, body
    nested = '{"":' + "[" * 1990
    bad_forms = ["", "a/b", "{not json", "https:///", "http://[abc/x", nested, json.dumps({"euid": rows[0][0] + "\n"}),
                 rows[0][0] + "\n", "urn:", '{"euid": 5}', "[1]"]  # fmt: skip
    for bad in [{}, {"euid": 123}, *({"euid": b} for b in bad_forms)]:
        status, body = await alice.call("POST", f"{GL}/acquire", bad)
        assert status == 400, (bad, body)
    status, body = await alice.call("POST", f"{GL}/acquire", {"euid": rows[0][0]}, auth=False)
    assert status == 401, body


async def test_acquire_race_has_one_winner(server: Server, admin: Api, alice: Api, bob: Api) -> None:
    for _ in range(3):
        euid = (await imported(admin))[0][0]
        answers = await asyncio.gather(*[
            api.call("POST", f"{GL}/acquire", {"euid": euid}) for api in [alice, bob] * 6
        ])  # fmt: skip
        statuses = sorted(s for s, _ in answers)
        assert statuses.count(200) == 1 and statuses.count(400) == 11, answers
        winner = next(api for api, (s, _) in zip([alice, bob] * 6, answers, strict=True) if s == 200)
        loser = bob if winner is alice else alice
        for api, sees in ((winner, True), (loser, False)):
            status, listed = await api.call("GET", "/devices/?limit=1000")
            assert status == 200 and (euid in [d["username"] for d in listed["results"]]) == sees


# --- fingerprints ----------------------------------------------------------------------------------


async def test_fingerprint_rules(server: Server, alice: Api, bob: Api) -> None:
    fp = "ab" * 16
    for bad in ("ab" * 15 + "a", "ab" * 16 + "a", "zz" * 16, "", " " + "ab" * 16, None, 42):
        status, body = await alice.call("POST", f"{GL}/fingerprints", {"fingerprint": bad})
        assert status == 400, (bad, body)
    status, mine = await alice.call("POST", f"{GL}/fingerprints", {"fingerprint": fp, "description": "p"})
    assert status == 201, mine
    for api, value in ((alice, fp), (bob, fp), (bob, fp.upper())):
        status, body = await api.call("POST", f"{GL}/fingerprints", {"fingerprint": value})
        assert status == 409 and body["code"] == "duplicate_fingerprint", body
    status, body = await bob.call("POST", f"{GL}/fingerprints", {"fingerprint": "cd" * 16, "user": mine["id"]})
    assert status == 400, body
    for method in ("GET", "DELETE"):
        status, body = await bob.call(method, f"{GL}/fingerprints/{mine['id']}")
        assert status == 404, (method, body)
        status, body = await alice.call(method, f"{GL}/fingerprints/not-a-uuid")
        assert status == 404, (method, body)
    status, body = await bob.call("POST", f"{GL}/fingerprints/resync", {"fingerprints": [fp]})
    assert status == 400 and body["code"] == "unknown_fingerprint" and fp in body["detail"], body
    status, body = await alice.call(
        "POST", f"{GL}/fingerprints/resync", {"fingerprints": [fp, mine["id"].replace("-", "")]}
    )
    assert status == 200 and body["detail"] == "Synchronizing 1 fingerprint(s).", body
    status, body = await bob.call("GET", f"{GL}/fingerprints")
    assert status == 200 and fp not in json.dumps(body), body


# --- MQTT ------------------------------------------------------------------------------------------


async def test_gateway_mqtt_credentials_and_acl(server: Server, admin: Api, clients: Callable[..., Client]) -> None:
    rows = await imported(admin, 2)
    (euid, _, _, code), (other, _, _, other_code) = rows
    for user, password in ((euid, code + "x"), (euid, other_code), (euid, ""), (new_euid(), code)):
        assert await clients().connect(server.mqtt_port, user, password) == REFUSED, (user, password)
    gateway = clients()
    assert await gateway.connect(server.mqtts_port, euid, code, ca=server.ca) == 0
    for topic in (f"devices/{other}/fingerprints", "devices/+/fingerprints", "#"):
        assert await gateway.subscribe(topic) == 0x80, topic
    assert await gateway.subscribe(f"devices/{euid}/fingerprints") == 1
    # the list is the server's: a gateway (or whoever read its code off the box) cannot plant one
    forged = json.dumps([{"id": "x", "fingerprint": "f" * 32, "description": "forged"}])
    await gateway.publish(f"devices/{euid}/fingerprints", forged, qos=1, retain=True)
    await gateway.publish(f"devices/{euid}/fingerprints/resync", forged, qos=1)
    assert await gateway.nothing(0.5) == []
    late = clients()
    assert await late.connect(server.mqtt_port, euid, code) == 0
    assert await late.subscribe(f"devices/{euid}/fingerprints") == 1
    assert await late.nothing(0.5) == []  # nothing retained: never acquired


async def test_expired_activation_token(tmp_path_factory: pytest.TempPathFactory, smtpd: SmtpSink) -> None:
    from tests.support import mail_env

    srv = make_server(tmp_path_factory.mktemp("gatehouse-gwl-expiry"), **mail_env(smtpd.port),
                      GATEHOUSE_GATEWAY_LITE__ACTIVATION_HOURS="0.0005")  # 1.8 seconds  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            admin = Api(http, srv.url)
            await admin.login("admin@example.com")
            _, key = await provider(admin)
            email = "slow-reader@example.com"
            status, _ = await admin.call("POST", f"{GL}/users/register/", signup(key, email), auth=False)
            assert status == 201
            token = re.search(r"\b(\d{6})\b", (await smtpd.wait_for(email))[-1].body).group(1)  # type: ignore[union-attr]
            await asyncio.sleep(2.5)
            status, body = await admin.call("POST", f"{GL}/users/activate/", {"activation_token": token}, auth=False)
            assert status == 404, body
            rows = await fetch(srv, "SELECT account_status FROM users WHERE username = ?", email)
            assert rows == [("pending",)], rows
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


async def test_devices_lists_every_kind_and_patch_releases(server: Server, admin: Api, alice: Api) -> None:
    esp32, _ = await alice.claimed_device("kitchen meter")
    euid = (await imported(admin))[0][0]
    status, acquired = await alice.call("POST", f"{GL}/acquire", {"euid": euid})
    assert status == 200, acquired
    status, listed = await alice.call("GET", "/devices/?limit=1000")
    assert status == 200, listed
    kinds = {d["username"]: (d["kind"], d["commission_state"]) for d in listed["results"]}
    assert kinds[esp32["username"]] == ("esp32", None) and kinds[euid] == ("gateway_lite", "customer_provisioned")
    status, one = await alice.call("GET", f"/devices/{esp32['id']}/")
    assert status == 200 and one["uuid"] is None, one
    status, body = await alice.call("PUT", f"/devices/{esp32['id']}/release/")
    assert status == 404, body  # not a Gateway Lite
    status, body = await alice.call("PATCH", f"/devices/{acquired['uuid']}/release/")
    assert status == 200, body
    status, again = await alice.call("GET", f"/devices/{acquired['uuid']}/")
    assert status == 404, again  # back with its importer
    status, body = await alice.call("POST", f"{GL}/acquire", {"euid": euid})
    assert status == 200 and body["access_url"] != acquired["access_url"], body  # a new random part


async def test_concurrent_changes_leave_the_whole_list_retained(
    server: Server, admin: Api, http: aiohttp.ClientSession, clients: Callable[..., Client]
) -> None:
    """Ten fingerprints added at once: whatever order the pushes go in, the list the gateway keeps
    (the retained one, what a fresh subscription gets) has all ten."""
    t = Tenants(server, http, admin)
    owner = await t.user("customer", await t.customer(await t.partner("P")), ALL)
    ((euid, _, _, code),) = await imported(admin)
    status, _ = await owner.call("POST", f"{GL}/acquire", {"euid": euid})
    assert status == 200
    values = [f"{i:02x}" * 16 for i in range(10)]
    answers = await asyncio.gather(*[owner.call("POST", f"{GL}/fingerprints", {"fingerprint": v}) for v in values])
    assert all(s == 201 for s, _ in answers), answers
    fresh = clients()
    assert await fresh.connect(server.mqtt_port, euid, code) == 0
    assert await fresh.subscribe(f"devices/{euid}/fingerprints") == 1
    retained = json.loads((await fresh.receive_on(f"devices/{euid}/fingerprints")).payload)
    assert sorted(f["fingerprint"] for f in retained) == values, retained


async def test_gateway_of_a_running_import_cannot_be_acquired(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Rows already written by an import still running may be undone: 404 until it completes."""
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-gwl-slow-import"), GATEHOUSE_GATEWAY_LITE__IMPORT_BATCH_ROWS="1"
    )
    try:
        async with aiohttp.ClientSession() as http:
            admin = Api(http, srv.url)
            await admin.login("admin@example.com")
            rows = gateway_rows(1500)
            status, rec = await upload(admin, csv_bytes(rows), await product(admin))
            assert status == 201, rec

            async def midway() -> dict[str, object] | None:
                _, body = await admin.call("GET", f"{GL}/import/{rec['id']}")
                return body if body["status"] == "processing" and body["processed_rows"] > 0 else None

            await eventually(midway, timeout=30)
            status, body = await admin.call("POST", f"{GL}/acquire", {"euid": rows[0][0]})
            _, after = await admin.call("GET", f"{GL}/import/{rec['id']}")
            assert after["status"] == "processing", after  # the window held: the answer below is the rule's
            assert status == 404 and body["code"] == "gateway_not_found", body
            assert (await finished(admin, rec["id"], timeout=120))["status"] == "completed"
            status, body = await admin.call("POST", f"{GL}/acquire", {"euid": rows[0][0]})
            assert status == 200, body
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]
