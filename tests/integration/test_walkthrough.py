"""The README's users walk-through, step by step, on a server with the embedded defaults (no SMTP:
mail is read with `gatehouse outbox`, as the README does): a partner, an invited partner user who
registers, logs in, turns on TOTP, logs in with a code, changes their email, resets their password;
and a user of another partner who sees none of it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
import pytest

from tests.mqtt import Client
from tests.support import PASSWORD, Api, Server, gatehouse, make_server

NEW_PASSWORD = "N3w!password"
RESET_PASSWORD = "R3set!password"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("gatehouse-walkthrough"))
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


def newest_mail(server: Server, to: str) -> dict[str, Any]:
    """`gatehouse outbox --to ADDRESS --limit 1 --json`, as the README reads an invitation."""
    done = gatehouse("outbox", "--to", to, "--limit", "1", "--json", data_dir=server.data_dir, env=server.env)
    assert done.returncode == 0, done.stderr
    messages = json.loads(done.stdout)
    assert len(messages) == 1, messages
    return messages[0]


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return match.group(1)


async def test_the_readme_users_walkthrough(plain: Server, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    admin = Api(http, plain.url)
    await admin.login("admin@example.com")

    # A partner, and one of its users invited (pending until they register).
    status, acme = await admin.call("POST", "/partners/", {"name": "Acme"})
    assert status == 201, acme
    status, olga = await admin.call(
        "POST",
        "/users/",
        {"username": "olga@acme.example", "account_type": "partner", "partner": acme["id"],
         "first_name": "Olga", "last_name": "Ops"},
    )  # fmt: skip
    assert status == 201 and olga["account_status"] == "pending", olga

    # The invitation, read from the outbox; registering with its key.
    invitation = newest_mail(plain, "olga@acme.example")
    key = found(r"activation key: (\S+)", invitation["body"])
    anyone = Api(http, plain.url)
    body = {"activation_key": key, "first_name": "Olga", "last_name": "Ops",
            "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}  # fmt: skip
    status, answer = await anyone.call("POST", "/users/register/", body)
    assert status == 201, answer
    assert (await anyone.call("POST", "/users/register/", body))[0] == 400  # the key worked once

    # Log in; turn on TOTP with the secret an authenticator app would get.
    me = Api(http, plain.url)
    await me.login("olga@acme.example", NEW_PASSWORD)
    status, setup = await me.call("POST", f"/users/{olga['id']}/two_factor/setup", {"two_factor_auth_method": "app"})
    assert status == 200, setup
    totp = pyotp.TOTP(setup["setup_details"]["secret"])
    status, answer = await me.call(
        "POST", f"/users/{olga['id']}/two_factor/verify",
        {"two_factor_auth_code": totp.now(), "two_factor_auth_method": "app"},
    )  # fmt: skip
    assert status == 200, answer

    # A password alone is not enough any more; with a code it is.
    login = {"username": "olga@acme.example", "password": NEW_PASSWORD}
    status, answer = await anyone.call("POST", "/auth/login", login)
    assert status == 401 and answer["code"] == "two_factor_required" and answer["method"] == "app", answer
    # The code of the next 30 s step (accepted one step early): the current one was used by verify.
    code = totp.at(time.time() + 30)
    status, tokens = await anyone.call("POST", "/auth/login", {**login, "two_factor_auth_code": code})
    assert status == 200, tokens
    status, answer = await anyone.call("POST", "/auth/login", {**login, "two_factor_auth_code": code})
    assert status == 401, answer  # the same code twice: refused

    # The email changes (an admin asks; the new address confirms with its key).
    status, answer = await admin.call("PATCH", f"/users/{olga['id']}/", {"username": "olga@acme-new.example"})
    assert status == 202 and answer["account_status"] == "transfer", answer
    verification = newest_mail(plain, "olga@acme-new.example")
    key = found(r"/update-email/([^/\s]+)/", verification["body"])
    status, answer = await anyone.call("POST", "/users/update_email", {"activation_key": key})
    assert status == 200, answer

    # The password is reset through the mailed link.
    status, answer = await anyone.call("POST", "/users/password/request/change/", {"username": "olga@acme-new.example"})
    assert status == 200, answer
    link = newest_mail(plain, "olga@acme-new.example")["body"]
    uidb64, token = re.search(r"/reset-password/([^/\s]+)/([^/?\s]+)", link).groups()  # type: ignore[union-attr]
    change = {"uidb64": uidb64, "token": token, "password": RESET_PASSWORD, "password_confirm": RESET_PASSWORD}
    status, answer = await anyone.call("POST", "/users/password/change/", change)
    assert status == 200, answer
    # The new password is the one (it gets as far as the second step); the old one is not.
    status, answer = await anyone.call(
        "POST", "/auth/login", {"username": "olga@acme-new.example", "password": RESET_PASSWORD}
    )
    assert status == 401 and answer["code"] == "two_factor_required", answer
    status, answer = await anyone.call(
        "POST", "/auth/login", {"username": "olga@acme-new.example", "password": NEW_PASSWORD}
    )
    assert status == 401 and answer["code"] == "invalid_credentials", answer

    # Another partner's user sees none of it.
    status, globex = await admin.call("POST", "/partners/", {"name": "Globex"})
    assert status == 201
    done = gatehouse(
        "users", "create", "--username", "gil@globex.example", "--account-type", "partner",
        "--partner", globex["id"], "--password-stdin",
        data_dir=plain.data_dir, stdin=PASSWORD + "\n", env=plain.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    gil = Api(http, plain.url)
    await gil.login("gil@globex.example")
    for path in (f"/users/{olga['id']}/", f"/partners/{acme['id']}/", f"/users/{olga['id']}/permissions"):
        status, answer = await gil.call("GET", path)
        assert status == 404, (path, answer)
    status, listed = await gil.call("GET", "/users/")
    assert status == 200 and [u["username"] for u in listed["results"]] == ["gil@globex.example"], listed


async def test_the_readme_accessory_walkthrough(plain: Server, http: aiohttp.ClientSession) -> None:
    """README "Hardware accessories": register in the example's camelCase, log in, PATCH with the
    accessory's bare token, publish over MQTT/TLS with the token as password, read, delete."""
    admin = Api(http, plain.url)
    await admin.login("admin@example.com")
    admin_token = admin.token or ""
    h = {"Accept": "application/json"}
    mac = "1d:3a:42:5d:a5:ea"
    body = {"password": "ffqkjhrqdkha2", "hardwareModel": "Model T", "firmwareVersion": "1.0", "settingsKey": "123456"}
    status, made = await admin.call(
        "POST", "/v1/accessory/1D-3A-42-5D-A5-EA/register", body, headers={**h, "Authorization": admin_token}
    )
    assert status == 201 and made["mac_address"] == mac and made["hardware_model"] == "Model T", made
    status, again = await admin.call("POST", f"/v1/accessory/{mac.replace(':', '')}/register", body, headers=h)
    assert status == 409 and admin.last_headers["Status"] == "DuplicateMacAddress", again

    status, login = await admin.call("POST", f"/v1/accessory/{mac}/login", {"password": "ffqkjhrqdkha2"},
                                     headers=h, auth=False)  # fmt: skip
    assert status == 200 and login["token_type"] == "Bearer", login
    acc = login["access_token"]
    status, patched = await admin.call(
        "PATCH", f"/v1/accessory/{mac}", {"firmware_version": "1.1"}, headers={**h, "Authorization": acc}
    )
    assert status == 200 and patched["firmware_version"] == "1.1", patched

    client = Client(mac)
    assert await client.connect(plain.mqtts_port, mac, acc, ca=plain.ca) == 0
    assert await client.publish(f"devices/{mac}/telemetry", b'{"battery":97}')
    status, seen = await admin.call("GET", f"/v1/accessory/{mac}", headers={**h, "Authorization": admin_token})
    assert status == 200 and seen["online"] is True and seen["firmware_version"] == "1.1", seen
    status, latest = await admin.call("GET", f"/gateway/devices/{made['device_id']}/telemetry/latest")
    assert status == 200 and latest["payload"] == {"battery": 97}, latest

    status, gone = await admin.call("DELETE", f"/v1/accessory/{mac}", headers={**h, "Authorization": admin_token})
    assert status == 200 and gone["mac_address"] == mac, gone
    assert await asyncio.to_thread(client.disconnected.wait, 5)
    status, _ = await admin.call("GET", f"/v1/accessory/{mac}", headers={**h, "Authorization": acc})
    assert status == 401


async def test_the_readme_gateway_lite_walkthrough(plain: Server, http: aiohttp.ClientSession) -> None:
    """README "Gateway Lite": a provider and its key, a product, the printf'd CSV imported, a user
    registered with the key and activated with the token from `gatehouse outbox`, the gateway acquired,
    a fingerprint held by the gateway over MQTT/TLS, resync, release (the gateway holds [])."""
    admin = Api(http, plain.url)
    await admin.login("admin@example.com")
    status, partner = await admin.call("POST", "/partners/", {"name": "Lite Co", "is_gateway_lite_provider": True})
    assert status == 201, partner
    status, key = await admin.call("GET", f"/partners/{partner['id']}/integration_key/")
    assert status == 200, key
    status, product = await admin.call("POST", "/products/", {"name": "Gateway Lite"})
    assert status == 201, product
    euid, code = "0200000100001274", "ic-secret-1274"
    csv = f'"Product Serial Number";"FW Code";"Nabto DeviceId";"InstallCode"\n{euid};FW1;nabto-1274;{code}\n'
    form = aiohttp.FormData()
    form.add_field("csv_file", csv.encode(), filename="gw.csv")
    form.add_field("product_id", product["id"])
    status, rec = await admin.call("POST", "/integrations/gateway_lite/import", data=form)  # type: ignore[arg-type]
    assert status == 201 and rec["status"] == "pending", rec
    for _ in range(100):
        status, rec = await admin.call("GET", f"/integrations/gateway_lite/import/{rec['id']}")
        if rec["status"] != "pending" and rec["status"] != "processing":
            break
        await asyncio.sleep(0.1)
    assert rec["status"] == "completed" and rec["processed_rows"] == 1, rec

    bob_mail = "bob@lite.example"
    status, body = await admin.call("POST", "/integrations/gateway_lite/users/register/", {
        "integration_key": key["integration_key"], "first_name": "Bob", "last_name": "Bobsen", "email": bob_mail,
        "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}, auth=False)  # fmt: skip
    assert status == 201, body
    token = found(r"Your activation token: (\d{6})", newest_mail(plain, bob_mail)["body"])
    status, body = await admin.call("POST", "/integrations/gateway_lite/users/activate/", {"activation_token": token})
    assert status == 200, body
    bob = Api(http, plain.url)
    await bob.login(bob_mail, NEW_PASSWORD)
    status, acquired = await bob.call("POST", "/integrations/gateway_lite/acquire", {"euid": euid})
    assert status == 200 and acquired["access_url"].startswith(f"{euid}-"), acquired
    assert acquired["access_url"].endswith(".p2p.gatehouse.local"), acquired
    status, devices = await bob.call("GET", "/devices/")
    assert status == 200 and devices["results"][0]["commission_state"] == "customer_provisioned", devices

    gateway = Client(euid)
    assert await gateway.connect(plain.mqtts_port, euid, code, ca=plain.ca) == 0
    assert await gateway.subscribe(f"devices/{euid}/fingerprints") == 1
    assert json.loads((await gateway.receive_on(f"devices/{euid}/fingerprints")).payload) == []
    fp = {"fingerprint": "e66db5dc25c4423da290d42a5b57af21", "description": "Iphone 7s Plus"}
    status, made = await bob.call("POST", "/integrations/gateway_lite/fingerprints", fp)
    assert status == 201, made
    held = json.loads((await gateway.receive_on(f"devices/{euid}/fingerprints")).payload)
    assert held == [{"id": made["id"], **fp}], held
    status, body = await bob.call("POST", "/integrations/gateway_lite/fingerprints/resync")
    assert status == 200 and body == {"detail": "Synchronizing 1 fingerprint(s)."}, body
    assert json.loads((await gateway.receive_on(f"devices/{euid}/fingerprints")).payload) == held
    status, body = await bob.call("PUT", f"/devices/{acquired['uuid']}/release/")
    assert status == 200 and body == {"detail": "The Gateway was released successfully."}, body
    assert json.loads((await gateway.receive_on(f"devices/{euid}/fingerprints")).payload) == []
    gateway.close()


async def test_the_readme_iotlock_walkthrough(plain: Server, http: aiohttp.ClientSession) -> None:
    """README "Smart locks": register, the activation key from `gatehouse outbox`, activate, log in, a
    gateway and a mailbox, the gateway's session holding what was sent before it connected (TLS, its
    thing id as client id, clean_session=0), an answer by hand, a PIN with ?wait, unlock, the history,
    then `gatehouse sim lock` with the README's arguments."""
    lou_mail, lou_password = "lou@locks.example", NEW_PASSWORD
    api = Api(http, plain.url)
    status, body = await api.call("POST", "/iotlock/register", {"email": lou_mail, "password": lou_password,
        "first_name": "Lou", "last_name": "Locks", "account_name": "Home"})  # fmt: skip
    assert status == 201, body
    key = found(r"Your activation key: (\S+)", newest_mail(plain, lou_mail)["body"])
    status, body = await api.call("POST", "/iotlock/activate", {"activation_key": key})
    assert status == 200, body
    await api.login(lou_mail, lou_password)
    status, gw = await api.call("POST", "/iotlock/gateways", {"name": "porch", "public_key": "pk-porch"})
    assert status == 201 and [c["action"] for c in gw["commands"]] == ["CONNECT", "REGISTER"], gw
    status, box = await api.call(
        "POST", f"/iotlock/gateways/{gw['id']}/mailboxes", {"name": "front", "public_key": "pk-front"}
    )
    assert status == 201, box

    thing, password = gw["thing_id"], gw["mqtt"]["password"]
    sub = Client(thing, clean_session=False)
    assert await sub.connect(plain.mqtts_port, thing, password, ca=plain.ca) == 0
    for cid in (gw["channel_id"], box["channel_id"]):
        assert await sub.subscribe(f"channels/{cid}/messages/req/+") == 1
    got = [await sub.receive() for _ in range(4)]
    packs = [json.loads(m.payload) for m in got]
    assert [p[0]["n"] for p in packs] == ["CONNECT", "REGISTER", "ADD", "Mailbox"], packs
    connect_id = got[0].topic.rsplit("/", 1)[1]
    pub = Client(f"{thing}-pub")
    assert await pub.connect(plain.mqtts_port, thing, password, ca=plain.ca) == 0
    answer = json.dumps([{"bn": f"{thing}_", "n": "CONNECT", "vs": "ok"}])
    assert await pub.publish(f"channels/{gw['channel_id']}/messages/res/{connect_id}", answer)
    status, cmd = await api.call("GET", f"/iotlock/commands/{connect_id}?wait=5")
    assert status == 200 and cmd["status"] == "acknowledged", cmd
    status, pin = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/pins?wait=5", {"pin": "4321"})
    assert status == 202 and pin["action"] == "AUTH" and pin["status"] == "delivered" and pin["pin_id"], pin
    assert json.loads((await sub.receive()).payload)[0]["v"] == 4321
    status, opened = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/unlock")
    assert status == 202 and opened["action"] == "UNLOCK", opened
    status, events = await api.call("GET", f"/iotlock/mailboxes/{box['id']}/events")
    assert status == 200 and {e["name"] for e in events["results"]} >= {"ADD", "Mailbox", "AUTH", "UNLOCK"}, events
    sub.close()
    pub.close()

    done = await asyncio.to_thread(
        gatehouse, "sim", "lock", "--user", lou_mail, "--password", lou_password, "--gateways", "1",
        "--mailboxes", "2", "--pin", "1:4321", "--enter-pin", "1:4321", "--enter-pin", "2:4321", "--duration", "2",
        "--tls", "--url", plain.url, "--mqtt-port", str(plain.mqtts_port), data_dir=plain.data_dir, env=plain.env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "commands answered: ADD=2 AUTH=1 CONNECT=1 Mailbox=2 REGISTER=1" in done.stdout, done.stdout
    assert "keypad: mailbox 1 pin 4321 -> UNLOCKED" in done.stdout, done.stdout
    assert "keypad: mailbox 2 pin 4321 -> PIN_REJECTED" in done.stdout, done.stdout
