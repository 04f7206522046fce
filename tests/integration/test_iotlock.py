"""IoTLock end to end against a real server, real SMTP and real MQTT (spec/iotlock.md): register ->
activate -> add a gateway -> it connects and gets CONNECT, REGISTER -> add a mailbox -> add a PIN ->
the gateway holds it -> the keypad entry unlocks and shows in the history -> remove the PIN -> the
same entry is refused. Plus members, the command lifecycle and the gateway's own removal."""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp

from tests.iotlock import LockGateway, history, member, new_gateway, new_mailbox, settle, until
from tests.mqtt import Client
from tests.smtp import SmtpSink
from tests.support import PASSWORD, Api, Server, fetch

NOT_AUTHORIZED = 0x87  # paho's reason code for CONNACK 5


async def test_iotlock_end_to_end(
    mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession, clients: Callable[..., Client]
) -> None:
    api = await member(mail_server, http, smtpd)
    status, account = await api.call("GET", "/iotlock/account")
    assert status == 200 and account["name"] == "Home" and len(account["members"]) == 1, account

    created = await new_gateway(api)
    assert [c["action"] for c in created["commands"]] == ["CONNECT", "REGISTER"], created
    assert all(c["status"] == "pending" for c in created["commands"])
    mqtt = created["mqtt"]
    assert mqtt["username"] == mqtt["client_id"] == created["thing_id"] and mqtt["password"], mqtt
    assert mqtt["req_topic"] == f"channels/{created['channel_id']}/messages/req/+"
    assert mqtt["port"] == mail_server.mqtt_port and mqtt["tls_port"] == mail_server.mqtts_port

    # The gateway connects for the first time (TLS): the commands sent before are waiting for it.
    gw = LockGateway(created, clients(created["thing_id"], clean_session=False))
    assert await gw.connect(mail_server, tls=True) == 0
    assert await gw.client.subscribe(f"devices/{gw.thing}/errors") == 1
    channel, command_id, pack = await gw.command()
    assert (channel, command_id) == (created["channel_id"], created["commands"][0]["id"])
    assert pack == [{"bn": f"{created['thing_id']}_", "n": "CONNECT", "u": "Requested", "vb": True}]
    await gw.answer(channel, command_id, pack)
    assert await gw.serve(1) == ["REGISTER"]
    done = await settle(api, created["commands"][1]["id"])
    assert done["status"] == "acknowledged" and done["delivered_at"] and done["answered_at"], done
    status, seen = await api.call("GET", f"/iotlock/gateways/{created['id']}")
    assert status == 200 and seen["online"] is True and seen["last_seen"], seen

    box = await new_mailbox(api, created["id"])
    assert [c["action"] for c in box["commands"]] == ["ADD", "Mailbox"], box
    channel, command_id, pack = await gw.command()
    assert channel == created["channel_id"]
    assert pack == [{"bn": f"{created['thing_id']}_", "n": "ADD", "u": "PublicKey", "vs": "mpk-front"}]
    await gw.answer(channel, command_id, pack)
    channel, command_id, pack = await gw.command()  # on the mailbox's channel: the server subscribed it
    assert channel == box["channel_id"]
    assert pack == [{"bn": f"{box['channel_id']}_", "n": "Mailbox", "u": "PublicKey", "vs": "mpk-front"}]
    await gw.answer(channel, command_id, pack)

    status, cmd = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/pins", {"pin": "4321"})
    assert status == 202 and cmd["action"] == "AUTH" and cmd["pin_id"], cmd
    assert cmd["pack"] == [{"bn": f"{box['channel_id']}_", "n": "AUTH", "u": "PIN"}]  # no PIN in answers
    channel, command_id, pack = await gw.command()
    assert pack == [{"bn": f"{box['channel_id']}_", "n": "AUTH", "u": "PIN", "v": 4321}]
    await gw.answer(channel, command_id, pack)
    assert (await settle(api, cmd["id"]))["status"] == "acknowledged"
    assert gw.pins[box["channel_id"]] == {4321}  # the gateway holds it

    status, mailbox = await api.call("GET", f"/iotlock/mailboxes/{box['id']}")
    assert status == 200 and [p["id"] for p in mailbox["pins"]] == [cmd["pin_id"]], mailbox
    assert "4321" not in json.dumps(mailbox)

    assert await gw.enter_pin(box["channel_id"], 4321) == "UNLOCKED"

    async def unlocked() -> list[dict[str, object]]:
        return [h for h in await history(api, box["id"]) if h["kind"] == "event" and h["name"] == "UNLOCKED"]

    event = (await until(unlocked))[0]
    assert event["detail"] == {"value": "pin"}, event

    status, removal = await api.call("DELETE", f"/iotlock/mailboxes/{box['id']}/pins/{cmd['pin_id']}")
    assert status == 202 and removal["action"] == "UNAUTH", removal
    channel, command_id, pack = await gw.command()
    assert pack == [{"bn": f"{box['channel_id']}_", "n": "UNAUTH", "u": "PIN", "v": 4321}]
    await gw.answer(channel, command_id, pack)
    assert (await settle(api, removal["id"]))["status"] == "acknowledged"
    assert await gw.enter_pin(box["channel_id"], 4321) == "PIN_REJECTED"

    async def rejected() -> list[dict[str, object]]:
        return [h for h in await history(api, box["id"]) if h["name"] == "PIN_REJECTED"]

    assert await until(rejected)
    names = [(h["kind"], h["name"], h["status"]) for h in reversed(await history(api, box["id"]))]
    assert names == [
        ("command", "ADD", "pending"), ("command", "Mailbox", "pending"),
        ("outcome", "ADD", "acknowledged"), ("outcome", "Mailbox", "acknowledged"),
        ("command", "AUTH", "pending"), ("outcome", "AUTH", "acknowledged"), ("event", "UNLOCKED", None),
        ("command", "UNAUTH", "pending"), ("outcome", "UNAUTH", "acknowledged"), ("event", "PIN_REJECTED", None),
    ], names  # fmt: skip

    # Unlock from the app, answered with an error: failed, with the gateway's reason.
    status, opened = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/unlock")
    assert status == 202 and opened["action"] == "UNLOCK", opened
    channel, command_id, pack = await gw.command()
    assert pack == [{"bn": f"{box['channel_id']}_", "n": "UNLOCK", "u": "Requested", "vb": True}]
    await gw.answer(channel, command_id, pack, ok=False)
    failed = await settle(api, opened["id"])
    assert failed["status"] == "failed" and failed["reason"] == "refused by the test", failed

    # PINs are stored hashed (and sealed), never in the clear.
    rows = await fetch(mail_server, "SELECT pin_hash, pin_sealed FROM iotlock_pins")
    assert all("4321" not in str(row) for row in rows)
    queued = await fetch(mail_server, "SELECT pack FROM iotlock_commands")
    assert all("4321" not in str(row) for row in queued)

    # The mailbox goes: DELETE to the gateway, its channel no longer reaches it.
    status, gone = await api.call("DELETE", f"/iotlock/mailboxes/{box['id']}?wait=5")
    assert status == 202 and gone["action"] == "DELETE", gone
    channel, command_id, pack = await gw.command()
    assert pack == [{"bn": f"{created['thing_id']}_", "n": "DELETE", "u": "PublicKey", "vs": "mpk-front"}]
    await gw.answer(channel, command_id, pack)
    assert (await settle(api, gone["id"]))["status"] == "acknowledged"
    assert (await api.call("GET", f"/iotlock/mailboxes/{box['id']}"))[0] == 404
    assert await gw.client.subscribe(f"channels/{box['channel_id']}/messages/req/+") == 0x80

    # The gateway goes: DESTRUCT, then its login ends.
    status, destruct = await api.call("DELETE", f"/iotlock/gateways/{created['id']}")
    assert status == 202 and destruct["action"] == "DESTRUCT", destruct
    assert (await api.call("GET", f"/iotlock/gateways/{created['id']}"))[0] == 404
    channel, command_id, pack = await gw.command()
    assert pack == [{"bn": f"{created['channel_id']}_", "n": "DESTRUCT", "u": "Gateway", "vs": "pk-porch"}]
    await gw.answer(channel, command_id, pack)
    assert (await settle(api, destruct["id"]))["status"] == "acknowledged"
    assert await until(lambda: _async(gw.client.disconnected.is_set()))
    again = LockGateway(created, clients(created["thing_id"], clean_session=False))
    assert await again.connect(mail_server) == NOT_AUTHORIZED  # the thing is gone


async def _async(value: object) -> object:
    return value


async def test_members_share_the_account(
    mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession, clients: Callable[..., Client]
) -> None:
    first = await member(mail_server, http, smtpd)
    gateway = await new_gateway(first)
    email = f"second-{gateway['id'][:8]}@example.com"
    status, invited = await first.call("POST", "/iotlock/account/members", {"email": email, "first_name": "Sec"})
    assert status == 201 and invited["status"] == "pending", invited
    status, again = await first.call("POST", "/iotlock/account/members", {"email": email})
    assert status == 409 and again["code"] == "already_member", again

    mail = (await smtpd.wait_for(email))[-1]
    key = mail.body.split("Your activation key: ")[1].split()[0]
    second = Api(http, mail_server.url)
    status, body = await second.call("POST", "/users/register/", {
        "activation_key": key, "first_name": "Sec", "last_name": "Ond", "password": PASSWORD,
        "password_confirm": PASSWORD,
    })  # fmt: skip
    assert status == 201, body
    await second.login(email)

    # Equal control: the second member sees the first one's gateway and adds a mailbox to it.
    status, seen = await second.call("GET", f"/iotlock/gateways/{gateway['id']}")
    assert status == 200 and seen["thing_id"] == gateway["thing_id"], seen
    await new_mailbox(second, gateway["id"], "side")
    status, listed = await first.call("GET", "/iotlock/gateways")
    assert status == 200 and listed["count"] == 1 and listed["results"][0]["mailboxes"][0]["name"] == "side"

    # The first member leaves; the last one cannot while there are gateways.
    status, account = await second.call("GET", "/iotlock/account")
    ids = {m["email"]: m["user_id"] for m in account["members"]}
    status, _ = await second.call("DELETE", f"/iotlock/account/members/{ids[first.email]}")  # type: ignore[attr-defined]
    assert status == 204
    assert (await first.call("GET", f"/iotlock/gateways/{gateway['id']}"))[0] == 404
    status, refused = await second.call("DELETE", f"/iotlock/account/members/{ids[email]}")
    assert status == 409 and refused["code"] == "last_member", refused
    status, _ = await second.call("DELETE", f"/iotlock/gateways/{gateway['id']}?expires_in=1")
    assert status == 202
    status, _ = await second.call("DELETE", f"/iotlock/account/members/{ids[email]}")
    assert status == 204
    assert (await second.call("GET", "/iotlock/account"))[0] == 404
