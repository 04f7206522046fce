"""`gatehouse sim lock` against the real server: gateways and mailboxes added through the API, run over
MQTT, PINs set through the API and typed at keypads; and `LockGateway` driven in-process."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
from typing import Any

import aiohttp
import pytest

from firmware_sim.iotlock import LockGateway
from tests.smtp import SmtpSink
from tests.support import PASSWORD, ROOT, Api, Server, eventually


async def member(server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession) -> tuple[str, Api]:
    """A new IoTLock account's first member, activated from the mail and logged in: (email, api)."""
    email = f"lock-{secrets.token_hex(4)}@example.com"
    api = Api(http, server.url)
    body = {"email": email, "password": PASSWORD, "first_name": "Sim", "last_name": "Ulator", "account_name": "Sims"}
    status, answer = await api.call("POST", "/iotlock/register", body, auth=False)
    assert status == 201, answer
    mail = (await smtpd.wait_for(email))[-1]
    match = re.search(r"activation key: (\S+)", mail.body, re.IGNORECASE)
    assert match, mail.body
    status, answer = await api.call("POST", "/iotlock/activate", {"activation_key": match[1]}, auth=False)
    assert status == 200, answer
    await api.login(email)
    return email, api


async def sim(server: Server, *args: str, tls: bool = False, timeout: float = 90) -> tuple[int, str, str]:
    port = server.mqtts_port if tls else server.mqtt_port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatehouse.cli", "sim", "lock", *args, "--data-dir", str(server.data_dir),
        "--url", server.url, "--mqtt-port", str(port), *(["--tls"] if tls else []),
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_SIM_")},
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _line(stdout: str, prefix: str) -> str:
    return next(ln for ln in stdout.splitlines() if ln.startswith(prefix))


def _counts(stdout: str, prefix: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", _line(stdout, prefix))}


async def _mailboxes(api: Api) -> dict[str, dict[str, Any]]:
    """The account's mailboxes by name."""
    status, listing = await api.call("GET", "/iotlock/gateways")
    assert status == 200, listing
    found: dict[str, dict[str, Any]] = {}
    for gateway in listing["results"]:
        status, full = await api.call("GET", f"/iotlock/gateways/{gateway['id']}")
        assert status == 200, full
        found.update({m["name"]: m for m in full["mailboxes"]})
    return found


async def _history(api: Api, mailbox_id: str) -> list[dict[str, Any]]:
    status, events = await api.call("GET", f"/iotlock/mailboxes/{mailbox_id}/events?limit=100")
    assert status == 200, events
    return events["results"]


@pytest.mark.parametrize("tls", [False, True])
async def test_sim_lock(mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession, tls: bool) -> None:
    email, api = await member(mail_server, smtpd, http)
    code, stdout, stderr = await sim(
        mail_server, "--user", email, "--password", PASSWORD, "--gateways", "2", "--mailboxes", "2",
        "--pin", "1:4321", "--enter-pin", "1:4321", "--enter-pin", "2:9999", "--duration", "3", tls=tls,
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert _line(stdout, "gateways ").startswith("gateways 2, mailboxes 4"), stdout
    answered = _counts(stdout, "commands answered:")
    assert answered == {"ADD": 4, "AUTH": 1, "CONNECT": 2, "Mailbox": 4, "REGISTER": 2}, stdout
    assert _counts(stdout, "events sent:") == {"BATTERY": 4, "PIN_REJECTED": 1, "UNLOCKED": 1}, stdout
    lines = stdout.splitlines()
    assert "keypad: mailbox 1 pin 4321 -> UNLOCKED" in lines, stdout
    assert "keypad: mailbox 2 pin 9999 -> PIN_REJECTED" in lines, stdout
    assert _line(stdout, "pins held:") == "pins held: mailbox 1: 1, mailbox 2: 0, mailbox 3: 0, mailbox 4: 0", stdout
    assert _line(stdout, "refused ").startswith("refused 0, dropped 0"), stdout

    mailboxes = await _mailboxes(api)
    assert sorted(mailboxes) == [f"sim-mb-{n}" for n in range(1, 5)], mailboxes
    status, first = await api.call("GET", f"/iotlock/mailboxes/{mailboxes['sim-mb-1']['id']}")
    assert status == 200 and len(first["pins"]) == 1, first
    one = await _history(api, mailboxes["sim-mb-1"]["id"])
    events = [e["name"] for e in one if e["kind"] == "event"]
    assert "UNLOCKED" in events and "BATTERY" in events and "PIN_REJECTED" not in events, one
    unlocked = next(e for e in one if e["kind"] == "event" and e["name"] == "UNLOCKED")
    assert unlocked["detail"]["value"] == "pin", unlocked
    assert any(e["kind"] == "outcome" and e["status"] == "acknowledged" for e in one), one
    two = await _history(api, mailboxes["sim-mb-2"]["id"])
    events = [e["name"] for e in two if e["kind"] == "event"]
    assert "PIN_REJECTED" in events and "UNLOCKED" not in events and "BATTERY" in events, two
    for name in ("sim-mb-3", "sim-mb-4"):
        assert [e["name"] for e in await _history(api, mailboxes[name]["id"]) if e["kind"] == "event"] == ["BATTERY"]
    for pin in ("4321", "9999"):  # the PINs are in no log line (a hex id or a port may hold the digits)
        assert not re.search(rf"(?<![0-9a-fA-F]){pin}(?![0-9a-fA-F])", mail_server.log()), pin


async def test_sim_lock_setup_errors(mail_server: Server) -> None:
    """A refused login is one line on stderr and exit 1; a bad MAILBOX:PIN is a usage error."""
    code, stdout, stderr = await sim(mail_server, "--user", "nobody@example.com", "--password", "Wrong-pass1")
    assert code == 1, stdout + stderr
    assert stderr.strip().startswith("gatehouse sim: setup failed: POST") and "401" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    code, _, stderr = await sim(mail_server, "--user", "a@b.c", "--password", "x", "--pin", "1:12")
    assert code == 2 and "MAILBOX:PIN" in stderr, stderr
    code, _, stderr = await sim(
        mail_server, "--user", "a@b.c", "--password", "x", "--mailboxes", "1", "--pin", "2:1234"
    )
    assert code == 2 and "above 1" in stderr, stderr


async def test_lock_gateway_in_process(mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession) -> None:
    """The simulator's gateway, driven from here: PINs in and out, an app unlock, a command sent while offline."""
    _, api = await member(mail_server, smtpd, http)
    status, body = await api.call("POST", "/iotlock/gateways", {"name": "inproc", "public_key": "ab" * 16})
    assert status == 201, body
    gateway = LockGateway.from_api(body)
    await gateway.connect("127.0.0.1", mail_server.mqtt_port)
    try:
        status, mb = await api.call("POST", f"/iotlock/gateways/{gateway.id}/mailboxes",
                                    {"name": "box", "public_key": "cd" * 16})  # fmt: skip
        assert status == 201, mb
        await gateway.add_mailbox(mb["channel_id"], "cd" * 16)
        status, cmd = await api.call("POST", f"/iotlock/mailboxes/{mb['id']}/pins?wait=5", {"pin": "2468"})
        assert status == 202 and cmd["status"] == "acknowledged", cmd
        assert gateway.held_pins(mb["channel_id"]) == {2468}
        status, cmd = await api.call("DELETE", f"/iotlock/mailboxes/{mb['id']}/pins/{cmd['pin_id']}?wait=5")
        assert status == 202 and cmd["status"] == "acknowledged", cmd
        assert gateway.held_pins(mb["channel_id"]) == set()
        status, cmd = await api.call("POST", f"/iotlock/mailboxes/{mb['id']}/unlock?wait=5")
        assert status == 202 and cmd["status"] == "acknowledged", cmd
        assert await gateway.enter_pin(mb["channel_id"], 2468) == "PIN_REJECTED"

        async def unlocked_by_app() -> bool:
            history = await _history(api, mb["id"])
            return any(e["name"] == "UNLOCKED" and e["detail"]["value"] == "app" for e in history) and any(
                e["name"] == "PIN_REJECTED" for e in history
            )

        await eventually(unlocked_by_app)

        await gateway.close()  # offline: the AUTH waits in the persistent session
        status, cmd = await api.call("POST", f"/iotlock/mailboxes/{mb['id']}/pins", {"pin": "1357"})
        assert status == 202 and cmd["status"] == "pending", cmd
        await gateway.connect("127.0.0.1", mail_server.mqtt_port)
        assert await gateway.wait_for_pin(mb["channel_id"], 1357, timeout=10)
        status, cmd = await api.call("GET", f"/iotlock/commands/{cmd['id']}?wait=5")
        assert status == 200 and cmd["status"] == "acknowledged", cmd
        assert gateway.refused == 0
        assert gateway.answered == {"CONNECT": 1, "REGISTER": 1, "ADD": 1, "Mailbox": 1, "AUTH": 2, "UNAUTH": 1,
                                    "UNLOCK": 1}  # fmt: skip
    finally:
        await gateway.close()
