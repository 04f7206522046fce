"""The broker's rules against a real server: authentication, topic ACL, the amqtt holes we close,
keepalive and wills, and what a malformed payload does (and does not do) to a connection."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.mqtt import Client, Message
from tests.raw import connect_packet, packet, utf8
from tests.support import Api, Server, eventually

REFUSED = 0x80
# CONNACK return code 5 "not authorized" (MQTT 3.1.1): paho 2.x reports it as its MQTT 5 reason
# code 0x87; RawClient returns the byte on the wire.
NOT_AUTHORIZED = 0x87
CONNACK_NOT_AUTHORIZED = 5
RESERVED_ROOTS = ("devices/", "provisioning/", "channels/")

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def anon_alice(anon_server: Server, http: aiohttp.ClientSession) -> Api:
    api = Api(http, anon_server.url)
    await api.login("alice@example.com")
    return api


async def device_client(make: Callable[..., Client], server: Server, device: dict[str, Any], key: str) -> Client:
    client = make()
    assert await client.connect(server.mqtt_port, device["username"], key) == 0
    return client


async def drain(client: Client, wait: float = 0.5) -> list[Message]:
    return await client.nothing(wait)


async def history_count(api: Api, device_id: int) -> int:
    status, body = await api.call("GET", f"/gateway/devices/{device_id}/telemetry")
    assert status == 200, body
    return len(body["results"])


async def is_online(api: Api, device_id: int) -> bool:
    status, body = await api.call("GET", f"/gateway/devices/{device_id}")
    assert status == 200, body
    return bool(body["online"])


class RawClient:
    """MQTT 3.1.1 by hand over a plain socket: it sends exactly what a test writes, nothing more
    (no PINGREQ), so a silent client or an illegal PUBLISH can be produced at will."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(
        self,
        port: int,
        client_id: str,
        *,
        keepalive: int,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> int:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(
            connect_packet(client_id, keepalive=keepalive, username=username, password=password, will=will)
        )
        await self.writer.drain()
        connack = await asyncio.wait_for(self.reader.readexactly(4), 5)
        assert connack[:2] == b"\x20\x02", connack
        return connack[3]

    async def publish(self, topic: str, payload: bytes, qos: int = 0, packet_id: int = 1) -> None:
        assert self.writer is not None
        body = utf8(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
        self.writer.write(packet(0x30 | (qos << 1), body))
        await self.writer.drain()

    async def closed_by_server(self, timeout: float) -> bool:
        """Read (and ignore) whatever comes until the server closes the socket, or time runs out."""
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                if not await asyncio.wait_for(self.reader.read(4096), left):
                    return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --- 1. authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_connect_auth(server: Server, alice: Api, clients: Callable[..., Client], tls: bool) -> None:
    device, key = await alice.claimed_device()
    port = server.mqtts_port if tls else server.mqtt_port
    ca = server.ca if tls else None
    assert await clients().connect(port, device["username"], key + "x", ca=ca) == NOT_AUTHORIZED
    assert await clients().connect(port, device["username"], "", ca=ca) == NOT_AUTHORIZED
    assert await clients().connect(port, f"nobody-{uuid.uuid4().hex[:8]}", key, ca=ca) == NOT_AUTHORIZED
    assert await clients().connect(port, ca=ca) == NOT_AUTHORIZED  # anonymous refused on `server`
    good = clients()
    assert await good.connect(port, device["username"], key, ca=ca) == 0
    assert await good.publish(f"devices/{device['username']}/telemetry", json.dumps({"v": 1}))


async def test_refused_connect_on_the_wire(server: Server, alice: Api) -> None:
    # The CONNACK byte itself is 5 (not authorized), and the server then closes the socket.
    device, key = await alice.claimed_device()
    for username, password in ((device["username"], "wrong"), (f"nobody-{uuid.uuid4().hex[:8]}", key), (None, None)):
        raw = RawClient()
        try:
            rc = await raw.connect(
                server.mqtt_port, f"raw-{uuid.uuid4().hex[:8]}", keepalive=30, username=username, password=password
            )
            assert rc == CONNACK_NOT_AUTHORIZED, username
            assert await raw.closed_by_server(3)
        finally:
            raw.close()


async def test_tls_refuses_a_client_that_does_not_trust_the_server(server: Server) -> None:
    # The TLS listener really is TLS with our CA: verification against the system store fails.
    client = Client()
    client.paho.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(client.paho.connect, "localhost", server.mqtts_port, 30)


async def test_anonymous_accepted_on_anon_server(anon_server: Server, clients: Callable[..., Client]) -> None:
    client = clients()
    assert await client.connect(anon_server.mqtt_port) == 0
    topic = f"test/{uuid.uuid4().hex}/hello"
    assert await client.subscribe(topic) == 1
    assert await client.publish(topic, b"hi")
    assert (await client.receive_on(topic)).payload == b"hi"


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_replaced_key_refused_and_open_connection_closed(
    server: Server, alice: Api, clients: Callable[..., Client], tls: bool
) -> None:
    device, old_key = await alice.claimed_device()
    port = server.mqtts_port if tls else server.mqtt_port
    ca = server.ca if tls else None
    old = clients()
    assert await old.connect(port, device["username"], old_key, ca=ca) == 0
    assert await old.publish(f"devices/{device['username']}/telemetry", json.dumps({"v": 1}))

    status, claim = await alice.claim(await alice.provision(device["id"]))
    assert status == 200, claim
    new_key = claim["api_key"]
    assert new_key != old_key

    assert await old.wait_disconnected(5), "the connection made with the replaced key is still open"
    assert await clients().connect(port, device["username"], old_key, ca=ca) == NOT_AUTHORIZED
    new = clients()
    assert await new.connect(port, device["username"], new_key, ca=ca) == 0
    assert await new.publish(f"devices/{device['username']}/telemetry", json.dumps({"v": 2}))
    assert await history_count(alice, device["id"]) == 2


async def test_replacing_one_key_leaves_other_devices_connected(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    dev_a, key_a = await alice.claimed_device()
    dev_b, key_b = await alice.claimed_device()
    b = await device_client(clients, server, dev_b, key_b)
    a = await device_client(clients, server, dev_a, key_a)
    status, _ = await alice.claim(await alice.provision(dev_a["id"]))
    assert status == 200
    assert await a.wait_disconnected(5)
    assert not b.disconnected.is_set()
    assert await b.publish(f"devices/{dev_b['username']}/telemetry", json.dumps({"v": 1}))


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
@pytest.mark.parametrize("owner_clean", [True, False], ids=["owner-clean", "owner-persistent"])
async def test_refused_connect_with_a_taken_client_id_does_not_disturb_the_owner(
    server: Server, alice: Api, clients: Callable[..., Client], clean: bool, owner_clean: bool
) -> None:
    # amqtt 0.12.1 settles the session table BEFORE it authenticates a CONNECT: a clean one
    # deleted the subscriptions of the connected client with that id, a persistent one took over
    # its session and dropped it. Anyone knowing a client id could silence or drop that client.
    device, key = await alice.claimed_device()
    me = device["username"]
    owner = clients(f"{me}-owner-{uuid.uuid4().hex[:8]}", clean_session=owner_clean)
    assert await owner.connect(server.mqtt_port, me, key) == 0
    assert await owner.subscribe(f"devices/{me}/commands/req/+") == 1
    intruder = clients(owner.client_id, clean_session=clean)
    assert await intruder.connect(server.mqtt_port, me, "wrong-key") == NOT_AUTHORIZED
    # The broker answered the intruder before the owner's round trip: a drop would show by now.
    assert await owner.barrier(), "a refused CONNECT dropped the connected owner of its client id"
    assert not owner.disconnected.is_set(), "a refused CONNECT dropped the connected owner of its client id"
    assert await owner.publish(f"devices/{me}/commands/req/1", b'{"op":"ping"}')
    assert (await owner.receive_on(f"devices/{me}/commands/req/1")).payload == b'{"op":"ping"}'


async def test_accepted_connect_with_a_taken_client_id_takes_over(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    # [MQTT-3.1.4-2]: the client already connected with that id is disconnected. amqtt 0.12.1
    # left it connected (detached from its session, receiving nothing) on a clean-session CONNECT.
    device, key = await alice.claimed_device()
    me = device["username"]
    first = clients(f"{me}-{uuid.uuid4().hex[:8]}")
    assert await first.connect(server.mqtt_port, me, key) == 0
    assert await first.subscribe(f"devices/{me}/commands/req/+") == 1
    second = clients(first.client_id)
    assert await second.connect(server.mqtt_port, me, key) == 0
    assert await first.wait_disconnected(5), "the previous connection with the same client id is still open"
    assert await second.subscribe(f"devices/{me}/commands/req/+") == 1
    assert await second.publish(f"devices/{me}/commands/req/2", b"{}")
    assert (await second.receive_on(f"devices/{me}/commands/req/2")).payload == b"{}"
    assert await is_online(alice, device["id"])


# --- 2. topic ACL ------------------------------------------------------------------------------


async def test_device_subscribe_acl(server: Server, alice: Api, clients: Callable[..., Client]) -> None:
    me_dev, key = await alice.claimed_device()
    other, _ = await alice.claimed_device()
    me, them = me_dev["username"], other["username"]
    client = await device_client(clients, server, me_dev, key)
    wanted = {
        f"devices/{them}/telemetry": REFUSED,
        f"devices/{them}/#": REFUSED,
        "devices/+/telemetry": REFUSED,
        "devices/#": REFUSED,
        "#": REFUSED,
        "+/+/telemetry": REFUSED,
        f"+/{me}/telemetry": REFUSED,
        "provisioning/#": REFUSED,
        f"devices/{me}": REFUSED,
        f"devices/{me}/commands/req/+": 1,
        f"devices/{me}/#": 1,
    }
    got = {topic_filter: await client.subscribe(topic_filter) for topic_filter in wanted}
    assert got == wanted
    assert not client.disconnected.is_set()


async def test_device_publish_to_another_device_is_dropped(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    dev_a, key_a = await alice.claimed_device()
    dev_b, key_b = await alice.claimed_device()
    a_name, b_name = dev_a["username"], dev_b["username"]
    b = await device_client(clients, server, dev_b, key_b)
    assert await b.subscribe(f"devices/{b_name}/#") == 1
    await b.receive_on(f"devices/{b_name}/status")  # its own presence
    a = await device_client(clients, server, dev_a, key_a)

    await a.publish(f"devices/{b_name}/telemetry", json.dumps({"forged": 1}))
    await a.publish(f"devices/{b_name}/commands/res/1", json.dumps({"status": "ok"}))
    await a.publish(f"devices/{b_name}/status", b"offline", retain=True)
    assert await drain(b) == []
    assert await history_count(alice, dev_b["id"]) == 0
    # Still connected: its own publish is acknowledged and stored.
    assert not a.disconnected.is_set()
    assert await a.publish(f"devices/{a_name}/telemetry", json.dumps({"v": 1}))
    assert await history_count(alice, dev_a["id"]) == 1
    # Nothing was retained on B's status either: a fresh subscriber sees B's own "online".
    assert await b.subscribe(f"devices/{b_name}/status") == 1
    msg = await b.receive_on(f"devices/{b_name}/status")
    assert msg.payload == b"online"


async def test_anonymous_acl(anon_server: Server, anon_alice: Api, clients: Callable[..., Client]) -> None:
    device, key = await anon_alice.claimed_device()
    dev_topic = f"devices/{device['username']}/telemetry"
    run = uuid.uuid4().hex
    anon = clients()
    assert await anon.connect(anon_server.mqtt_port) == 0
    for refused in ("devices/#", f"devices/{device['username']}/#", "provisioning/#", "channels/#", "channels/+/x"):
        assert await anon.subscribe(refused) == REFUSED, refused
    assert await anon.subscribe(f"test/{run}/#") == 1
    assert await anon.subscribe("#") == 1
    assert await anon.subscribe("+/+/telemetry") == 1

    dev = await device_client(clients, anon_server, device, key)
    assert await dev.subscribe(f"devices/{device['username']}/#") == 1
    assert await dev.publish(dev_topic, json.dumps({"v": 1}))
    await dev.receive_on(dev_topic)  # the broadcast happened
    # Anonymous publishes on reserved roots are dropped: the device sees none of them.
    await anon.publish(f"devices/{device['username']}/commands/req/1", b'{"op":"open"}')
    await anon.publish("provisioning/x/claim", b"{}")
    assert await anon.publish(f"test/{run}/free", b"ok")
    got = await drain(anon, 1.0)
    assert [m.topic for m in got if m.topic.startswith(RESERVED_ROOTS)] == []
    assert f"test/{run}/free" in {m.topic for m in got}
    assert all(m.topic == f"devices/{device['username']}/telemetry" for m in await drain(dev, 0.3))
    assert not anon.disconnected.is_set()


async def test_provision_user_only_its_own_client_id(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    me, other = f"setup-{uuid.uuid4().hex[:8]}", f"setup-{uuid.uuid4().hex[:8]}"
    victim = clients(other)
    assert await victim.connect(server.mqtt_port, "provision", "") == 0
    assert await victim.subscribe(f"provisioning/{other}/+") == 1
    client = clients(me)
    assert await client.connect(server.mqtt_port, "provision", "") == 0
    wanted = {
        f"provisioning/{me}/+": 1,
        f"provisioning/{me}/#": 1,
        f"provisioning/{other}/accepted": REFUSED,
        f"provisioning/{other}/#": REFUSED,
        "provisioning/+/accepted": REFUSED,
        "provisioning/#": REFUSED,
        "devices/#": REFUSED,
        "#": REFUSED,
    }
    assert {f: await client.subscribe(f) for f in wanted} == wanted
    device = await alice.new_device()
    token = await alice.provision(device["id"])
    await client.publish(f"provisioning/{other}/claim", json.dumps({"token": token}))
    await client.publish(f"provisioning/{other}/accepted", b"{}")
    assert await drain(victim) == []
    # The token was not spent by the dropped claim: the rightful claim still wins.
    await client.publish(f"provisioning/{me}/claim", json.dumps({"token": token}))
    body = json.loads((await client.receive_on(f"provisioning/{me}/accepted")).payload)
    assert body["device_id"] == device["id"]


async def test_provision_client_id_with_a_wildcard_gets_no_topics(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    other = f"setup-{uuid.uuid4().hex[:8]}"
    victim = clients(other)
    assert await victim.connect(server.mqtt_port, "provision", "") == 0
    sneaky = clients("+")
    assert await sneaky.connect(server.mqtt_port, "provision", "") == 0
    assert await sneaky.subscribe("provisioning/+/#") == REFUSED
    assert await sneaky.subscribe("provisioning/+/accepted") == REFUSED


# --- 3. amqtt holes ------------------------------------------------------------------------------


async def test_will_on_another_devices_topic_refused(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    dev_a, key_a = await alice.claimed_device()
    dev_b, key_b = await alice.claimed_device()
    a_name, b_name = dev_a["username"], dev_b["username"]
    for topic in (f"devices/{b_name}/status", f"devices/{b_name}/planted"):
        bad = clients()
        rc = await bad.connect(server.mqtt_port, a_name, key_a, will=(topic, b"pwned", 1, True))
        if rc == 0:
            bad.kill()  # if it got in, make the will fire so the check below sees it
        assert rc == NOT_AUTHORIZED, topic
    assert not await is_online(alice, dev_a["id"])
    b = await device_client(clients, server, dev_b, key_b)
    assert await b.subscribe(f"devices/{b_name}/#") == 1
    got = await drain(b, 1.0)
    assert b"pwned" not in {m.payload for m in got}
    assert {(m.topic, m.payload) for m in got} == {(f"devices/{b_name}/status", b"online")}


async def test_will_on_own_topic_accepted_and_delivered(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    device, key = await alice.claimed_device()
    me = device["username"]
    watcher = await device_client(clients, server, device, key)
    assert await watcher.subscribe(f"devices/{me}/lastwill") == 1
    gone = f"gone-{uuid.uuid4().hex}".encode()
    dying = clients()
    assert await dying.connect(server.mqtt_port, me, key, will=(f"devices/{me}/lastwill", gone, 1, False)) == 0
    dying.kill()
    assert (await watcher.receive_on(f"devices/{me}/lastwill")).payload == gone


@pytest.mark.parametrize("suffix", ["telemetry", "commands/res/abc"])
async def test_will_on_a_routed_topic_refused(
    server: Server, alice: Api, clients: Callable[..., Client], suffix: str
) -> None:
    """A will would reach subscribers without its handler (unvalidated, unstored): refused."""
    device, key = await alice.claimed_device()
    me = device["username"]
    client = clients()
    rc = await client.connect(server.mqtt_port, me, key, will=(f"devices/{me}/{suffix}", b'{"v": 1}', 1, False))
    assert rc == NOT_AUTHORIZED


@pytest.mark.parametrize(
    "will_topic", ["$SYS/broker/uptime", "test/+/w", "devices/x/status"], ids=["sys", "wildcard", "reserved"]
)
async def test_anonymous_will_outside_its_topics_refused(
    anon_server: Server, clients: Callable[..., Client], will_topic: str
) -> None:
    client = clients()
    rc = await client.connect(anon_server.mqtt_port, will=(will_topic, b"pwned", 0, True))
    if rc == 0:
        client.kill()
    assert rc == NOT_AUTHORIZED


async def test_retained_messages_of_one_device_never_reach_another(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    dev_a, key_a = await alice.claimed_device()
    dev_b, key_b = await alice.claimed_device()
    a_name, b_name = dev_a["username"], dev_b["username"]
    a = await device_client(clients, server, dev_a, key_a)
    # A's own filter is in the broker's subscription table; A has retained messages under it.
    assert await a.subscribe(f"devices/{a_name}/#") == 1
    assert await a.publish(f"devices/{a_name}/config", b"secret-config", retain=True)
    await a.receive_on(f"devices/{a_name}/config")
    # amqtt 0.12.1 would push every retained message matching ANY client's filter to B on connect.
    b = await device_client(clients, server, dev_b, key_b)
    assert await b.subscribe(f"devices/{b_name}/#") == 1
    got = await drain(b, 1.0)
    assert [m.topic for m in got if not m.topic.startswith(f"devices/{b_name}/")] == []
    assert (f"devices/{b_name}/status", b"online") in {(m.topic, m.payload) for m in got}
    # A itself still gets its retained message when it subscribes again.
    a2 = await device_client(clients, server, dev_a, key_a)
    assert await a2.subscribe(f"devices/{a_name}/config") == 1
    msg = await a2.receive_on(f"devices/{a_name}/config")
    assert (msg.payload, msg.retain) == (b"secret-config", True)


async def test_anonymous_wildcard_gets_no_retained_device_messages(
    anon_server: Server, anon_alice: Api, clients: Callable[..., Client]
) -> None:
    device, key = await anon_alice.claimed_device()
    me = device["username"]
    dev = await device_client(clients, anon_server, device, key)
    assert await dev.subscribe(f"devices/{me}/#") == 1
    assert (await dev.receive_on(f"devices/{me}/status")).payload == b"online"
    assert await dev.publish(f"devices/{me}/config", b"secret-config", retain=True)
    await dev.receive_on(f"devices/{me}/config")
    run = uuid.uuid4().hex
    setter = clients()
    assert await setter.connect(anon_server.mqtt_port) == 0
    assert await setter.publish(f"test/{run}/kept", b"kept", retain=True)

    anon = clients()
    assert await anon.connect(anon_server.mqtt_port) == 0
    assert await anon.subscribe("#") == 1
    got = await drain(anon, 1.0)
    assert [m.topic for m in got if m.topic.startswith(RESERVED_ROOTS)] == []
    assert (f"test/{run}/kept", b"kept", True) in {(m.topic, m.payload, m.retain) for m in got}


async def test_empty_retained_payload_clears(anon_server: Server, clients: Callable[..., Client]) -> None:
    topic = f"test/{uuid.uuid4().hex}/r"
    pub = clients()
    assert await pub.connect(anon_server.mqtt_port) == 0
    assert await pub.publish(topic, b"x", retain=True)
    first = clients()
    assert await first.connect(anon_server.mqtt_port) == 0
    assert await first.subscribe(topic) == 1
    msg = await first.receive_on(topic)
    assert (msg.payload, msg.retain) == (b"x", True)

    assert await pub.publish(topic, b"", retain=True)
    late = clients()
    assert await late.connect(anon_server.mqtt_port) == 0
    assert await late.subscribe(topic) == 1
    assert await drain(late) == []


async def test_keepalive_enforced_anonymous_will_delivered(anon_server: Server, clients: Callable[..., Client]) -> None:
    will_topic = f"test/{uuid.uuid4().hex}/will"
    watcher = clients()
    assert await watcher.connect(anon_server.mqtt_port) == 0
    assert await watcher.subscribe(will_topic) == 1
    raw = RawClient()
    try:
        rc = await raw.connect(
            anon_server.mqtt_port, f"silent-{uuid.uuid4().hex[:8]}", keepalive=2, will=(will_topic, b"lost", 1, False)
        )
        assert rc == 0
        # 1.5 x 2 s, plus room for a loaded machine.
        assert await raw.closed_by_server(8), "a client silent past its keepalive is still connected"
        assert (await watcher.receive_on(will_topic, timeout=3)).payload == b"lost"
    finally:
        raw.close()


async def test_keepalive_enforced_device_will_and_offline(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    device, key = await alice.claimed_device()
    me = device["username"]
    token = f"lost-{uuid.uuid4().hex}".encode()
    raw = RawClient()
    try:
        rc = await raw.connect(
            server.mqtt_port,
            f"{me}-silent-{uuid.uuid4().hex[:8]}",
            keepalive=2,
            username=me,
            password=key,
            will=(f"devices/{me}/lastwill", token, 1, True),
        )
        assert rc == 0
        await eventually(lambda: is_online(alice, device["id"]))
        assert await raw.closed_by_server(8), "a client silent past its keepalive is still connected"
    finally:
        raw.close()

    async def offline() -> bool:
        return not await is_online(alice, device["id"])

    await eventually(offline)
    # The will (retained) was published: the device reads it back on its next connection.
    back = await device_client(clients, server, device, key)
    assert await back.subscribe(f"devices/{me}/lastwill") == 1
    msg = await back.receive_on(f"devices/{me}/lastwill")
    assert (msg.payload, msg.retain) == (token, True)


# --- 4. malformed payloads and illegal topics ------------------------------------------------------


async def test_malformed_telemetry_answered_on_errors_topic(
    server: Server, alice: Api, clients: Callable[..., Client]
) -> None:
    device, key = await alice.claimed_device()
    bystander_dev, bystander_key = await alice.claimed_device()
    me = device["username"]
    topic = f"devices/{me}/telemetry"
    client = await device_client(clients, server, device, key)
    bystander = await device_client(clients, server, bystander_dev, bystander_key)
    assert await client.subscribe(f"devices/{me}/errors") == 1
    cases = [
        (b"not json", "invalid_json"),
        (json.dumps([{"n": 1, "v": 2}]).encode(), "invalid_senml"),
        (json.dumps([1, 2, 3]).encode(), "invalid_senml"),
        (b"42", "invalid_telemetry"),
        (b"{}", "invalid_telemetry"),
        (b'{"v": "\xff\xfe"}', "invalid_json"),
        (b'{"v": "\\u0000"}', "invalid_json"),
        (b'{"v": "\\udfff"}', "invalid_json"),
        (b"", "invalid_json"),
    ]
    for payload, code in cases:
        assert await client.publish(topic, payload), f"no PUBACK for {payload!r}"
        error = json.loads((await client.receive_on(f"devices/{me}/errors")).payload)
        assert error["topic"] == topic
        assert error["code"] == code, (payload, error)
        assert error["detail"]
        assert await history_count(alice, device["id"]) == 0, payload
    assert not client.disconnected.is_set()
    assert not bystander.disconnected.is_set()
    assert await bystander.publish(f"devices/{bystander_dev['username']}/telemetry", json.dumps({"v": 1}))
    assert await client.publish(topic, json.dumps({"v": 1}))
    assert await history_count(alice, device["id"]) == 1
    assert await drain(client, 0.3) == []  # no error for the good sample


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("bad_topic", ["devices/{me}/+", "devices/{me}/#", "+", "#"])
async def test_illegal_publish_topic_closes_only_that_connection(
    server: Server, alice: Api, clients: Callable[..., Client], bad_topic: str, qos: int
) -> None:
    device, key = await alice.claimed_device()
    me = device["username"]
    same_device = await device_client(clients, server, device, key)
    other_dev, other_key = await alice.claimed_device()
    other = await device_client(clients, server, other_dev, other_key)
    raw = RawClient()
    try:
        assert (
            await raw.connect(
                server.mqtt_port, f"{me}-raw-{uuid.uuid4().hex[:8]}", keepalive=30, username=me, password=key
            )
            == 0
        )
        await raw.publish(bad_topic.format(me=me), b'{"v": 1}', qos=qos)
        assert await raw.closed_by_server(3), "the broker kept a connection that published on an illegal topic"
    finally:
        raw.close()
    assert not same_device.disconnected.is_set()
    assert not other.disconnected.is_set()
    assert await same_device.publish(f"devices/{me}/telemetry", json.dumps({"v": 1}))
    assert await other.publish(f"devices/{other_dev['username']}/telemetry", json.dumps({"v": 1}))
    assert await history_count(alice, device["id"]) == 1


@pytest.mark.parametrize("topic", ["$SYS/x", "$devices/{me}/telemetry"])
async def test_dollar_topic_publish_is_dropped_not_fatal(
    server: Server, alice: Api, clients: Callable[..., Client], topic: str
) -> None:
    """A device may not publish on "$" topics; the publish is dropped and the connection stays."""
    device, key = await alice.claimed_device()
    me = device["username"]
    client = await device_client(clients, server, device, key)
    assert await client.publish(topic.format(me=me), b'{"v": 1}')  # PUBACKed, then dropped by the ACL
    assert await client.publish(f"devices/{me}/telemetry", json.dumps({"v": 1}))
    assert not client.disconnected.is_set()
    assert await history_count(alice, device["id"]) == 1
