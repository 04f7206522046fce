"""Isolation between identities and sessions against a real server: client ids bound to whoever
holds their session, claim replies only to the claiming connection, nothing left behind by a
deleted device, the CONNECT timeout, QoS 2 past the inbound bound, presence after a kill -9,
delivery QoS of republished telemetry, session expiry and logout."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.mqtt import Client
from tests.raw import PUBACK, PUBCOMP, PUBREC, PUBREL, RawSession, packet, utf8
from tests.support import Api, Server, eventually, fetch, make_server

CONNACK_NOT_AUTHORIZED = 5  # RawSession returns the return code on the wire
SETTLE = 0.3  # see the one test that still pauses


# --- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Short CONNECT timeout, two inbound publishes in hand per connection, one-second session
    expiry, anonymous clients allowed."""
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-tight"),
        GATEHOUSE_BROKER__CONNECT_TIMEOUT_SECONDS="1",
        GATEHOUSE_BROKER__MAX_INBOUND_MESSAGES="2",
        GATEHOUSE_BROKER__SESSION_EXPIRY_SECONDS="1",
        GATEHOUSE_BROKER__ALLOW_ANONYMOUS="true",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


@pytest.fixture
async def tight_alice(tight_server: Server, http: aiohttp.ClientSession) -> Api:
    api = Api(http, tight_server.url)
    await api.login("alice@example.com")
    return api


def new_id(prefix: str = "iso") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def qos2_publish(topic: str, payload: bytes, packet_id: int, *, dup: bool) -> bytes:
    """A QoS 2 PUBLISH packet with a chosen packet id and DUP flag."""
    return packet(0x30 | 0x04 | (0x08 if dup else 0), utf8(topic) + packet_id.to_bytes(2, "big") + payload)


async def send_command(api: Api, device_id: int, command: dict[str, Any]) -> str:
    status, body = await api.call("POST", f"/gateway/devices/{device_id}/commands", {"command": command})
    assert status == 202, body
    return body["req_id"]


async def is_online(api: Api, device_id: int) -> bool:
    status, body = await api.call("GET", f"/gateway/devices/{device_id}")
    assert status == 200, body
    return bool(body["online"])


async def history(api: Api, device_id: int) -> list[dict[str, Any]]:
    status, body = await api.call("GET", f"/gateway/devices/{device_id}/telemetry?limit=100")
    assert status == 200, body
    return body["results"]


async def stored_session(server: Server, client_id: str) -> bool:
    """Whether the server's database holds a persistent session for `client_id`."""
    return bool(await fetch(server, "SELECT client_id FROM mqtt_sessions WHERE client_id = ?", client_id))


async def refused_and_closed(raw: RawSession, port: int, client_id: str, **kw: Any) -> list[Any]:
    """Connect and expect "not authorized", then the server closing the socket; returns any
    PUBLISH that arrived on the way (tests assert it is empty)."""
    assert await raw.connect(port, client_id, **kw) == (0, CONNACK_NOT_AUTHORIZED)
    assert await raw.closed_by_server(3), "a refused CONNECT left its connection open"
    got = list(raw.backlog)
    raw.backlog.clear()
    return got


# --- 1. a client id belongs to the identity that holds its session ---------------------------------


async def test_client_id_of_a_persistent_session_is_bound_to_its_identity(
    server: Server, alice: Api, bob: Api, raws: Callable[[], RawSession], clients: Callable[..., Client]
) -> None:
    port = server.mqtt_port
    dev_a, key_a = await alice.claimed_device()
    dev_b, key_b = await bob.claimed_device()
    a_name = dev_a["username"]
    x = new_id(a_name)  # a device's client ids start with its username (docs/broker.md)

    first = raws()
    assert await first.connect(port, x, clean=False, username=a_name, password=key_a) == (0, 0)
    assert await first.subscribe(f"devices/{a_name}/commands/req/+", 1) == 1
    await first.disconnect(wait=5)
    req_id = await send_command(alice, dev_a["id"], {"pin": 1234})

    # (a) a provisioning client may not take the id over (and read the queued command).
    assert await refused_and_closed(raws(), port, x, clean=True, username="provision", password="any") == []
    # (b) nor may another owner's device, with its own valid credentials, clean or persistent: the
    # id is not one of its own (return code 2, identifier rejected).
    for clean in (True, False):
        intruder = raws()
        assert await intruder.connect(port, x, clean=clean, username=dev_b["username"], password=key_b) == (0, 2)
        assert await intruder.closed_by_server(3), "a refused CONNECT left its connection open"
        assert list(intruder.backlog) == [], clean

    # (c) the session is intact: A resumes it and gets the command queued while it was away.
    back = raws()
    assert await back.connect(port, x, clean=False, username=a_name, password=key_a) == (1, 0)
    msg = await back.next_publish(5)
    assert msg is not None, "the queued command was lost"
    assert msg.topic == f"devices/{a_name}/commands/req/{req_id}"
    assert json.loads(msg.payload) == {"pin": 1234}
    await back.ack(msg.packet_id)
    await back.disconnect(wait=5)

    # While A is connected with X, a provisioning client using X is refused and A stays connected.
    owner = clients(x, clean_session=False)
    assert await owner.connect(port, a_name, key_a) == 0
    assert await refused_and_closed(raws(), port, x, clean=True, username="provision", password="any") == []
    # A round trip on the owner's connection: the refused CONNECT is over, and a kick would show.
    reached = await owner.barrier()
    assert reached and not owner.disconnected.is_set(), "a refused CONNECT kicked the owner of its client id"
    req_id = await send_command(alice, dev_a["id"], {"pin": 4321})
    got = await owner.receive_on(f"devices/{a_name}/commands/req/{req_id}")
    assert json.loads(got.payload) == {"pin": 4321}
    await owner.disconnect()
    # End the persistent session.
    done = raws()
    assert await done.connect(port, x, clean=True, username=a_name, password=key_a) == (0, 0)
    await done.disconnect()


# --- 2. provisioning ---------------------------------------------------------------------------------


async def test_provisioning_client_may_not_ask_for_a_persistent_session(
    server: Server, raws: Callable[[], RawSession]
) -> None:
    got = await refused_and_closed(
        raws(), server.mqtt_port, new_id("setup"), clean=False, username="provision", password="any"
    )
    assert got == []


async def test_claim_reply_goes_to_the_claiming_connection_and_is_not_retained(
    server: Server, alice: Api, raws: Callable[[], RawSession]
) -> None:
    port, cid = server.mqtt_port, f"setup-{uuid.uuid4()}"
    device = await alice.new_device()
    token = await alice.provision(device["id"])

    p1 = raws()
    assert await p1.connect(port, cid, clean=True, username="provision", password="x") == (0, 0)
    assert await p1.subscribe(f"provisioning/{cid}/+", 1) == 1
    await p1.publish(f"provisioning/{cid}/claim", json.dumps({"token": token}).encode(), qos=1)
    await p1.expect(PUBACK)
    reply = await p1.next_publish(5)
    assert reply is not None, "no claim reply"
    assert reply.topic == f"provisioning/{cid}/accepted"
    assert not reply.retain
    body = json.loads(reply.payload)
    assert body["device_id"] == device["id"]
    assert body["api_key"]
    if reply.qos:
        await p1.ack(reply.packet_id)
    await p1.disconnect(wait=5)

    # Nothing retained: a later subscriber on the same topics gets nothing.
    p2 = raws()
    assert await p2.connect(port, cid, clean=True, username="provision", password="x") == (0, 0)
    assert await p2.subscribe(f"provisioning/{cid}/+", 1) == 1
    assert await p2.subscribe(f"provisioning/{cid}/#", 1) == 1
    assert await p2.publishes(1.0) == []
    await p2.disconnect()

    # The new key works.
    dev = raws()
    assert await dev.connect(
        port, new_id(device["username"]), username=device["username"], password=body["api_key"]
    ) == (0, 0)
    await dev.disconnect()


# --- 3. a deleted device leaves nothing behind -------------------------------------------------------


async def test_deleted_device_leaves_no_session_or_retained_messages(
    server: Server, alice: Api, bob: Api, raws: Callable[[], RawSession]
) -> None:
    port, username = server.mqtt_port, new_id("dev")
    cid = f"{username}-{uuid.uuid4().hex[:8]}"

    device = await alice.new_device("old", username=username)
    status, claimed = await alice.claim(await alice.provision(device["id"]))
    assert status == 200, claimed

    old = raws()
    assert await old.connect(port, cid, clean=False, username=username, password=claimed["api_key"]) == (0, 0)
    assert await old.subscribe(f"devices/{username}/commands/req/+", 1) == 1
    assert await old.subscribe(f"devices/{username}/status", 1) == 1
    status_msg = await old.next_publish(5)
    assert status_msg is not None
    assert (status_msg.topic, status_msg.payload, status_msg.retain) == (f"devices/{username}/status", b"online", True)
    await old.publish(f"devices/{username}/config", b"alice-secret", qos=1, retain=True)
    await old.expect(PUBACK)
    # A command is in flight to the old device (never acknowledged): its session still owes it.
    req_id = await send_command(alice, device["id"], {"pin": 1234})
    cmd = await old.next_publish(5)
    assert cmd is not None
    assert cmd.topic == f"devices/{username}/commands/req/{req_id}"

    status, body = await alice.call("DELETE", f"/gateway/devices/{device['id']}")
    assert status == 204, body
    assert await old.closed_by_server(5), "the deleted device's connection is still open"
    # The old connection's teardown (presence bookkeeping) runs after its socket is closed and
    # shows nothing a client can observe (the device and its topics are gone): no barrier exists,
    # so a short pause before the same username comes back.
    await asyncio.sleep(SETTLE)

    # Bob's new device with the same username and the same client id inherits nothing.
    fresh = await bob.new_device("new", username=username)
    status, bob_claim = await bob.claim(await bob.provision(fresh["id"]))
    assert status == 200, bob_claim
    new = raws()
    assert await new.connect(port, cid, clean=False, username=username, password=bob_claim["api_key"]) == (0, 0)
    assert await new.publishes(0.7) == [], "the old session's messages reached the new device"
    assert await new.subscribe(f"devices/{username}/#", 1) == 1
    got = await new.publishes(1.0)
    assert all(b"alice-secret" not in m.payload and b"1234" not in m.payload for m in got), got
    assert [(m.topic, m.payload) for m in got] == [(f"devices/{username}/status", b"online")]
    for m in got:
        if m.qos:
            await new.ack(m.packet_id)
    await new.disconnect(wait=5)
    done = raws()
    assert await done.connect(port, cid, clean=True, username=username, password=bob_claim["api_key"]) == (0, 0)
    await done.disconnect()


# --- 4. CONNECT timeout ------------------------------------------------------------------------------


async def test_socket_that_never_sends_connect_is_closed(tight_server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tight_server.mqtt_port)
    started = time.monotonic()
    try:
        try:
            data = await asyncio.wait_for(reader.read(1), 3.5)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            pytest.fail("a socket that sent no CONNECT is still open after 3.5 s (timeout is 1 s)")
        assert data == b""
        assert time.monotonic() - started < 3.5
    finally:
        writer.close()


# --- 5. QoS 2 inbound beyond the inbound bound -------------------------------------------------------


async def test_qos2_publishes_beyond_the_inbound_bound_all_complete_and_are_stored(
    tight_server: Server, tight_alice: Api, clients: Callable[..., Client]
) -> None:
    device, key = await tight_alice.claimed_device()
    me = device["username"]
    dev = clients()
    dev.paho.max_inflight_messages_set(20)
    assert await dev.connect(tight_server.mqtt_port, me, key) == 0
    infos = [dev.paho.publish(f"devices/{me}/telemetry", json.dumps({"n": n}), qos=2) for n in range(20)]

    def wait_all() -> None:
        deadline = time.monotonic() + 15
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))

    await asyncio.to_thread(wait_all)
    assert sum(info.is_published() for info in infos) == 20, "QoS 2 publishes did not complete"
    stored = await history(tight_alice, device["id"])
    assert sorted(r["payload"]["n"] for r in stored) == list(range(20))


async def test_qos2_publish_resent_with_dup_before_pubrel_is_stored_once(
    tight_server: Server, tight_alice: Api, raws: Callable[[], RawSession]
) -> None:
    device, key = await tight_alice.claimed_device()
    me = device["username"]
    raw = raws()
    assert await raw.connect(tight_server.mqtt_port, new_id(me), username=me, password=key) == (0, 0)
    sample = {"once": uuid.uuid4().hex}
    payload = json.dumps(sample).encode()
    topic = f"devices/{me}/telemetry"

    await raw.send(qos2_publish(topic, payload, 7, dup=False))
    assert int.from_bytes((await raw.expect(PUBREC)).body[:2], "big") == 7
    await raw.send(qos2_publish(topic, payload, 7, dup=True))
    assert int.from_bytes((await raw.expect(PUBREC)).body[:2], "big") == 7
    await raw.ack(7, PUBREL)
    assert int.from_bytes((await raw.expect(PUBCOMP)).body[:2], "big") == 7
    await raw.ping()
    # Stored before the first PUBREC (a duplicate would have been before the second), read back
    # once the sample shows in the history.
    stored = await eventually(lambda: history(tight_alice, device["id"]), timeout=10)
    assert [r["payload"] for r in stored] == [sample]
    await raw.disconnect()


# --- 6. presence after a kill -9 ---------------------------------------------------------------------


async def test_presence_reset_after_kill(
    tmp_path_factory: pytest.TempPathFactory, http: aiohttp.ClientSession, clients: Callable[..., Client]
) -> None:
    srv = make_server(tmp_path_factory.mktemp("gatehouse-kill"))
    try:
        api = Api(http, srv.url)
        await api.login("alice@example.com")
        device, key = await api.claimed_device()
        dev = clients()
        assert await dev.connect(srv.mqtt_port, device["username"], key) == 0

        async def online() -> bool:
            return await is_online(api, device["id"])

        await eventually(online)
        srv.stop(signal.SIGKILL)
        srv.start()
        # A new HTTP session: the old one's pooled connections went with the killed process.
        async with aiohttp.ClientSession() as fresh:
            api = Api(fresh, srv.url)
            await api.login("alice@example.com")
            assert not await is_online(api, device["id"]), "a device reads online after a kill -9 and restart"
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


# --- 7. telemetry republished at its own QoS ---------------------------------------------------------


async def test_telemetry_republished_at_the_publish_qos(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    device, key = await alice.claimed_device()
    me = device["username"]
    sub = clients()
    assert await sub.connect(server.mqtt_port, me, key) == 0
    assert await sub.subscribe(f"devices/{me}/telemetry", 1) == 1
    pub = clients()
    assert await pub.connect(server.mqtt_port, me, key) == 0
    assert await pub.publish(f"devices/{me}/telemetry", b'{"t":0}', qos=0)
    msg = await sub.receive_on(f"devices/{me}/telemetry")
    assert (msg.payload, msg.qos) == (b'{"t":0}', 0)
    # A QoS 1 sample is delivered at QoS 1 (the subscription's maximum).
    assert await pub.publish(f"devices/{me}/telemetry", b'{"t":1}', qos=1)
    msg = await sub.receive_on(f"devices/{me}/telemetry")
    assert (msg.payload, msg.qos) == (b'{"t":1}', 1)


# --- 8. session expiry -------------------------------------------------------------------------------


async def test_persistent_session_expires(tight_server: Server, raws: Callable[[], RawSession]) -> None:
    port, cid, topic = tight_server.mqtt_port, new_id(), f"test/{uuid.uuid4().hex}/m"
    first = raws()
    assert await first.connect(port, cid, clean=False) == (0, 0)
    assert await first.subscribe(topic, 1) == 1
    await first.disconnect(wait=5)
    again = raws()
    assert await again.connect(port, cid, clean=False) == (1, 0)  # the session is kept ...
    await eventually(lambda: stored_session(tight_server, cid), timeout=10)
    await again.disconnect(wait=5)

    # ... until it has been disconnected longer than its expiry: then it is dropped from the
    # database too (1 s expiry, checked once a second).
    async def forgotten() -> bool:
        return not await stored_session(tight_server, cid)

    await eventually(forgotten, timeout=15)
    pub = raws()
    assert await pub.connect(port, new_id()) == (0, 0)
    await pub.publish(topic, b"after-expiry", qos=1)
    await pub.expect(PUBACK)
    late = raws()
    assert await late.connect(port, cid, clean=False) == (0, 0)
    assert await late.publishes(0.7) == []
    await late.disconnect(wait=5)
    done = raws()
    assert await done.connect(port, cid, clean=True) == (0, 0)
    await done.disconnect()


# --- 9. logout ---------------------------------------------------------------------------------------


async def test_logout_revokes_only_the_callers_refresh_token(alice: Api, bob: Api) -> None:
    first = (await alice.login("alice@example.com"))["refresh_token"]
    status, body = await alice.call("POST", "/auth/logout", {"refresh_token": first})
    assert status == 204, body
    status, body = await alice.call("POST", "/auth/refresh", {"refresh_token": first}, auth=False)
    assert status == 401, body

    second = (await alice.login("alice@example.com"))["refresh_token"]
    status, body = await bob.call("POST", "/auth/logout", {"refresh_token": second})
    assert status in (204, 401, 403, 404), body
    status, body = await alice.call("POST", "/auth/refresh", {"refresh_token": second}, auth=False)
    assert status == 200, body
    assert body["refresh_token"] != second
