"""Gateway Lite end to end against a real server, real SMTP and real MQTT (spec/gateway-lite.rst):
import -> self-register -> activation token from the mail -> activate -> acquire -> fingerprints ->
the gateway holds them -> resync a subset -> release -> it holds none."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

import aiohttp

from tests.gateway_lite import csv_bytes, finished, gateway_rows, product, provider, upload
from tests.mqtt import Client
from tests.smtp import SmtpSink
from tests.support import PASSWORD, Api, Server

FP = ["e66db5dc25c4423da290d42a5b57af21", "e66db5dc25c4423da290d42a5b57af34", "0123456789abcdef0123456789ABCDEF"]


async def holds(client: Client, euid: str, want: list[str], timeout: float = 5) -> list[dict[str, str]]:
    """The gateway's list once it is `want` (fingerprint values, in order): lists arrive one by one."""
    topic, seen = f"devices/{euid}/fingerprints", None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            seen = json.loads((await client.receive_on(topic, max(0.05, deadline - loop.time()))).payload)
        except TimeoutError:
            break
        if [f["fingerprint"] for f in seen] == want:
            return seen
    raise AssertionError(f"{euid} never held {want}; last list: {seen}")


async def test_gateway_lite_end_to_end(
    mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession, clients: Callable[..., Client]
) -> None:
    admin = Api(http, mail_server.url)
    await admin.login("admin@example.com")
    _, key = await provider(admin)
    product_id = await product(admin)

    rows = gateway_rows(3)
    status, rec = await upload(admin, csv_bytes(rows), product_id, tags=["batch-1"])
    assert status == 201 and rec["status"] in ("pending", "processing"), rec
    done = await finished(admin, rec["id"])
    assert done["status"] == "completed" and done["processed_rows"] == done["total_rows"] == 3, done
    assert done["csv_file"] == "gateways.csv" and done["tags"] == ["batch-1"] and done["product_id"] == product_id

    email = f"gw-{rec['id'][:8]}@example.com"
    status, body = await admin.call("POST", "/integrations/gateway_lite/users/register/", {
        "integration_key": key, "first_name": "Bob", "last_name": "Bobsen", "email": email,
        "password": PASSWORD, "password_confirm": PASSWORD,
    }, auth=False)  # fmt: skip
    assert status == 201, body
    assert body == {"detail": "User account registered successfully. Please check your email to activate it."}
    user = Api(http, mail_server.url)
    status, refused = await user.call("POST", "/auth/login", {"username": email, "password": PASSWORD})
    assert status in (400, 401, 403), refused  # pending: no login yet
    mail = (await smtpd.wait_for(email))[-1]
    token = re.search(r"\b(\d{6})\b", mail.body).group(1)  # type: ignore[union-attr]
    status, body = await user.call("POST", "/integrations/gateway_lite/users/activate/", {"activation_token": token})
    assert status == 200, body
    status, again = await user.call("POST", "/integrations/gateway_lite/users/activate/", {"activation_token": token})
    assert status == 404, again  # single use
    await user.login(email)

    euid, _, _, install_code = rows[0]
    gateway = clients()
    assert await gateway.connect(mail_server.mqtts_port, euid, install_code, ca=mail_server.ca) == 0
    assert await gateway.subscribe(f"devices/{euid}/fingerprints") == 1
    assert await gateway.subscribe(f"devices/{rows[1][0]}/fingerprints") == 0x80  # not its own

    status, acquired = await user.call("POST", "/integrations/gateway_lite/acquire", {"euid": euid})
    assert status == 200 and acquired["euid"] == euid, acquired
    assert re.fullmatch(rf"{euid}-[0-9a-f]{{20}}\.p2p\.gatehouse\.local", acquired["access_url"]), acquired
    await holds(gateway, euid, [])
    status, devices = await user.call("GET", "/devices/")
    assert status == 200 and [d["username"] for d in devices["results"]] == [euid], devices
    assert devices["results"][0]["commission_state"] == "customer_provisioned"

    made = []
    for fp in FP:
        new = {"fingerprint": fp, "description": "phone"}
        status, body = await user.call("POST", "/integrations/gateway_lite/fingerprints", new)
        assert status == 201 and body["fingerprint"] == fp.lower(), body
        made.append(body)
    held = await holds(gateway, euid, [fp.lower() for fp in FP])
    status, listed = await user.call("GET", "/integrations/gateway_lite/fingerprints")
    assert status == 200 and listed == held, listed

    status, gone = await user.call("DELETE", f"/integrations/gateway_lite/fingerprints/{made[2]['id']}")
    assert status == 204, gone
    kept = await holds(gateway, euid, [made[0]["fingerprint"], made[1]["fingerprint"]])
    assert [f["id"] for f in kept] == [made[0]["id"], made[1]["id"]]

    assert await gateway.subscribe(f"devices/{euid}/fingerprints/resync") == 1
    subset = {"fingerprints": [made[1]["id"].replace("-", "")]}
    status, body = await user.call("POST", "/integrations/gateway_lite/fingerprints/resync", subset)
    assert status == 200 and body == {"detail": "Synchronizing 1 fingerprint(s)."}, body
    pushed = await gateway.receive_on(f"devices/{euid}/fingerprints/resync")
    assert [f["id"] for f in json.loads(pushed.payload)] == [made[1]["id"]]
    status, body = await user.call("POST", "/integrations/gateway_lite/fingerprints/resync")
    assert status == 200 and body == {"detail": "Synchronizing 2 fingerprint(s)."}, body
    assert await holds(gateway, euid, [made[0]["fingerprint"], made[1]["fingerprint"]]) == kept

    status, body = await user.call("PUT", f"/devices/{acquired['uuid']}/release/")
    assert status == 200 and body == {"detail": "The Gateway was released successfully."}, body
    await holds(gateway, euid, [])
    status, devices = await user.call("GET", "/devices/")
    assert status == 200 and devices["results"] == [], devices
    status, seen = await admin.call("GET", f"/devices/{acquired['uuid']}/")
    assert status == 200 and seen["commission_state"] == "inactive", seen

    # a fresh subscription finds the retained list
    late = clients()
    assert await late.connect(mail_server.mqtt_port, euid, install_code) == 0
    assert await late.subscribe(f"devices/{euid}/fingerprints") == 1
    await holds(late, euid, [])
