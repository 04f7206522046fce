"""IoTLock's rules against a real server and real MQTT: commands kept for an offline gateway across a
restart, a gateway that never answers (expired, and an expired command is never delivered), and
whatever a gateway or a client sends wrong (refused with a clear error; nothing stored; the
connection stays up)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.iotlock import LockGateway, history, member, new_gateway, new_mailbox, settle, until
from tests.mqtt import Client
from tests.smtp import SmtpSink
from tests.support import Api, Server, fetch, mail_env, make_server


async def _online(gw: LockGateway, server: Server, count: int) -> list[str]:
    assert await gw.connect(server) == 0
    assert await gw.client.subscribe(f"devices/{gw.thing}/errors") == 1
    return await gw.serve(count)


async def test_commands_wait_for_an_offline_gateway_across_a_restart(
    tmp_path: Path, smtpd: SmtpSink, http: aiohttp.ClientSession, clients: Callable[..., Client]
) -> None:
    server = make_server(tmp_path, **mail_env(smtpd.port))
    try:
        api = await member(server, http, smtpd)
        email = api.email  # type: ignore[attr-defined]
        created = await new_gateway(api)
        gw = LockGateway(created, clients(created["thing_id"], clean_session=False))
        assert await _online(gw, server, 2) == ["CONNECT", "REGISTER"]
        gw.client.close()  # offline; its session stays

        box = await new_mailbox(api, created["id"])
        status, pin = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/pins", {"pin": "2468"})
        assert status == 202 and pin["status"] == "pending", pin

        # Waiting in the gateway's session on disk, the AUTH pack is sealed: no PIN in the clear.
        async def queued() -> list[tuple[object, ...]]:
            rows = await fetch(server, "SELECT topic, payload FROM mqtt_queued_messages")
            return [r for r in rows if str(r[0]).endswith(pin["id"])]

        assert all(b"2468" not in bytes(r[1]) for r in await until(queued))  # type: ignore[arg-type]
        server.stop()
        server.start()
        async with aiohttp.ClientSession() as fresh:  # the old keep-alive connections died with the server
            api = Api(fresh, server.url)
            await api.login(email)
            assert (await settle(api, pin["id"], wait=0))["status"] == "pending"

            back = LockGateway(created, clients(created["thing_id"], clean_session=False))
            assert await _online(back, server, 3) == ["ADD", "Mailbox", "AUTH"]
            assert back.pins == {box["channel_id"]: {2468}}
            done = await settle(api, pin["id"])
            assert done["status"] == "acknowledged" and done["delivered_at"], done
        assert "Traceback" not in server.log()
    finally:
        server.stop()


async def test_a_gateway_that_never_answers(
    mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession, clients: Callable[..., Client]
) -> None:
    api = await member(mail_server, http, smtpd)
    created = await new_gateway(api)
    gw = LockGateway(created, clients(created["thing_id"], clean_session=False))
    await _online(gw, mail_server, 2)
    box = await new_mailbox(api, created["id"])
    await gw.serve(2)

    # Delivered (PUBACK), never answered: expired, in the command and in the history.
    status, cmd = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/unlock?expires_in=1")
    assert status == 202, cmd
    channel, command_id, pack = await gw.command()
    assert command_id == cmd["id"]
    expired = await settle(api, cmd["id"], wait=5)
    assert expired["status"] == "expired" and expired["delivered_at"] and not expired["answered_at"], expired
    await gw.answer(channel, command_id, pack)  # too late
    refusal = await gw.error()
    assert refusal["code"] == "command_expired", refusal

    async def outcome() -> list[dict[str, object]]:
        return [h for h in await history(api, box["id"]) if h["kind"] == "outcome" and h["command_id"] == cmd["id"]]

    entry = (await _until(outcome))[0]
    assert entry["status"] == "expired", entry

    # A command that expires while the gateway is offline is never delivered to it.
    gw.client.close()

    async def offline() -> bool:
        return (await api.call("GET", f"/iotlock/gateways/{created['id']}"))[1]["online"] is False

    assert await _until(offline)
    status, late = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/pins?expires_in=1", {"pin": "1357"})
    assert status == 202, late
    assert (await settle(api, late["id"], wait=5))["status"] == "expired"

    async def swept() -> list[dict[str, object]]:
        return [h for h in await history(api, box["id"]) if h["command_id"] == late["id"] and h["kind"] == "outcome"]

    assert await _until(swept)
    status, fresh = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/unlock")
    back = LockGateway(created, clients(created["thing_id"], clean_session=False))
    assert await _online(back, mail_server, 1) == ["UNLOCK"]  # the expired AUTH was withdrawn
    assert await back.client.nothing() == []
    assert (await settle(api, fresh["id"]))["status"] == "acknowledged"


async def _until(check: Callable[[], object]) -> object:
    return await until(check)


async def test_what_a_gateway_sends_wrong(
    mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession, clients: Callable[..., Client]
) -> None:
    api = await member(mail_server, http, smtpd)
    created = await new_gateway(api)
    gw = LockGateway(created, clients(created["thing_id"], clean_session=False))
    await _online(gw, mail_server, 2)
    box = await new_mailbox(api, created["id"])
    await gw.serve(2)
    status, cmd = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/unlock")
    assert status == 202, cmd
    channel, command_id, _ = await gw.command()
    res = f"channels/{channel}/messages/res/{command_id}"
    events = f"channels/{box['channel_id']}/messages/res/events"
    bn = f"{box['channel_id']}_"
    cases = [
        (res, b"not json", "invalid_json"),
        (res, b"{}", "invalid_senml"),
        (res, b"[]", "invalid_senml"),
        (res, json.dumps([{"n": "UNLOCK", "vs": "ok", "v": 1}]).encode(), "invalid_senml"),  # two values
        (res, json.dumps([{"n": "UNLOCK", "vs": "ok", "x_": 1}]).encode(), "invalid_senml"),  # must-understand
        (res, json.dumps([{"bn": bn, "n": "AUTH", "vs": "ok"}]).encode(), "invalid_answer"),  # another action
        (res, json.dumps([{"bn": bn, "n": "UNLOCK", "vs": "maybe"}]).encode(), "invalid_answer"),
        (f"channels/{channel}/messages/res/nosuchcommand", json.dumps([{"n": "UNLOCK", "vs": "ok"}]).encode(),
         "command_not_found"),
        (events, json.dumps([{"bn": bn, "n": "EXPLODED", "vb": True}]).encode(), "invalid_event"),
        (events, json.dumps([{"bn": bn, "n": "UNLOCKED", "vs": "crowbar"}]).encode(), "invalid_event"),
        (events, json.dumps([{"bn": bn, "n": "BATTERY", "v": 140}]).encode(), "invalid_event"),
        (events, json.dumps([{"bn": bn, "n": "BATTERY", "v": 50}, {"n": "TAMPER"}]).encode(), "invalid_senml"),
        (events, json.dumps([{"bn": bn, "n": "UNLOCKED", "vs": "pin", "t": 1e15}]).encode(), "invalid_event"),
    ]  # fmt: skip
    for topic, payload, code in cases:
        assert await gw.client.publish(topic, payload), topic  # PUBACKed: refused, not dropped
        refusal = await gw.error()
        assert refusal["code"] == code and refusal["topic"] == topic, (payload, refusal)
    assert not gw.client.disconnected.is_set()
    assert not [h for h in await history(api, box["id"]) if h["kind"] == "event"]  # nothing of a refused pack
    assert (await settle(api, cmd["id"], wait=0))["status"] == "delivered"

    # Then a good answer still counts, once.
    answer = json.dumps([{"bn": bn, "n": "UNLOCK", "vs": "ok"}])
    assert await gw.client.publish(res, answer)
    assert (await settle(api, cmd["id"]))["status"] == "acknowledged"
    assert await gw.client.publish(res, answer)
    assert (await gw.error())["code"] == "command_already_answered"
    # Events: several in one pack, with and without a time.
    pack = [{"bn": bn, "n": "BATTERY", "v": 87, "u": "%"}, {"n": "TAMPER", "vb": True, "t": -5}]
    assert await gw.client.publish(events, json.dumps(pack))

    async def reported() -> list[dict[str, object]]:
        return [h for h in await history(api, box["id"]) if h["kind"] == "event"]

    got = await _until(reported)
    assert sorted((h["name"], h["detail"]["value"]) for h in got) == [("BATTERY", 87), ("TAMPER", True)]  # type: ignore[index]


async def test_what_a_client_sends_wrong(mail_server: Server, smtpd: SmtpSink, http: aiohttp.ClientSession) -> None:
    api = await member(mail_server, http, smtpd)
    created = await new_gateway(api)
    box = await new_mailbox(api, created["id"])
    pins = f"/iotlock/mailboxes/{box['id']}/pins"
    for pin, code in [("123", "invalid_pin"), ("123456789", "invalid_pin"), ("0123", "invalid_pin"),
                      ("12a4", "invalid_pin"), (" 1234", "invalid_pin")]:  # fmt: skip
        status, body = await api.call("POST", pins, {"pin": pin})
        assert status == 400 and body["code"] == code and body["errors"][0]["field"] == "pin", (pin, body)
    for bad in [{"pin": 1234}, {}, {"pin": "1234", "extra": 1}, [1]]:
        status, body = await api.call("POST", pins, bad)
        assert status == 400 and body["code"] == "invalid_schema", (bad, body)
    status, body = await api.call("POST", pins, data=b"{nope", headers={"Content-Type": "application/json"})
    assert status == 400 and body["code"] == "invalid_json", body
    assert (await api.call("POST", pins, {"pin": "4321"}))[0] == 202
    status, body = await api.call("POST", pins, {"pin": "4321"})
    assert status == 409 and body["code"] == "duplicate_pin", body
    for query in ("wait=31", "wait=-1", "wait=x", "expires_in=0", "expires_in=9999999999"):
        status, body = await api.call("POST", f"/iotlock/mailboxes/{box['id']}/unlock?{query}")
        assert status == 400, (query, body)
    for path in (f"/iotlock/mailboxes/{box['id']}/pins/not-a-uuid", f"/iotlock/mailboxes/{box['id']}/pins/"
                 "00000000-0000-0000-0000-000000000000"):  # fmt: skip
        status, body = await api.call("DELETE", path)
        assert status == 404 and body["code"] == "pin_not_found", body
    long_id = "/iotlock/commands/" + "x" * 300
    for method, path in [("GET", "/iotlock/gateways/nope"), ("GET", "/iotlock/mailboxes/nope"),
                         ("GET", long_id), ("POST", "/iotlock/mailboxes/nope/unlock")]:  # fmt: skip
        status, body = await api.call(method, path)
        assert status == 404 and body["code"].endswith("_not_found"), (path, body)
    status, body = await api.call("POST", "/iotlock/gateways", {"name": ""})
    assert status == 400 and body["code"] == "invalid_schema", body
    status, body = await api.call("POST", f"/iotlock/gateways/{created['id']}/mailboxes", {"name": "m"})
    assert status == 400 and body["code"] == "invalid_schema", body  # a mailbox needs its public key
    status, body = await api.call("POST", "/iotlock/register", {"email": "x@example.com", "password": "short",
                                  "first_name": "a", "last_name": "b", "account_name": "c"})  # fmt: skip
    assert status == 400 and body["code"] == "weak_password", body
    status, body = await api.call("POST", "/iotlock/activate", {"activation_key": "made-up"})
    assert status == 400 and body["code"] == "invalid_key", body
    # Nothing half-written: the refused PINs left one PIN and no command for them.
    rows = await fetch(mail_server, "SELECT mailbox_id FROM iotlock_pins")
    assert [str(r[0]).replace("-", "") for r in rows].count(box["id"].replace("-", "")) == 1
    assert "Traceback" not in mail_server.log()


async def test_a_lock_gateway_made_in_the_registry_is_a_device_as_any_other(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    """POST /gateway/devices may register a `lock_gateway` too: it logs in with its API key, under
    devices/<username>/ only (no IoTLock account, no channels)."""
    device = await alice.new_device("bare lock", kind="lock_gateway")
    status, claimed = await alice.claim(await alice.provision(device["id"]))
    assert status == 200, claimed
    client = clients()
    assert await client.connect(server.mqtt_port, device["username"], claimed["api_key"]) == 0
    assert await client.subscribe(f"devices/{device['username']}/commands/req/+") == 1
    assert await client.subscribe("channels/anything/messages/req/+") == 0x80
