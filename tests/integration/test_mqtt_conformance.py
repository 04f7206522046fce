"""The Eclipse Paho MQTT 3.1.1 interoperability client tests, ported to pytest and run against our broker.

Source: https://github.com/eclipse/paho.mqtt.testing, ``interoperability/client_test.py``
(commit be3ecc1bade1e06d13fd3e59c058f724a3f598d7, the unittest version). Every test is kept step for step:
the same client ids, topics, QoS levels, payloads, retain flags, session flags, waits and assertions.
Where the original only sleeps and then counts, the sleeps are kept; where it sleeps a long time waiting
for one will message (will / keepalive tests) the port polls for it, bounded by the original sleep, and
then waits a short settling time before asserting the exact count. docs/conformance.md lists each test,
the MQTT 3.1.1 behaviour it checks and its current status.

The original drives the broker with the Paho testing client (``mqtt.clients.V311``); this port uses
paho-mqtt 2.2.0 through `InteropClient`, a thin wrapper with the same calls and semantics:

* ``connect`` waits for CONNACK, raises unless it is accepted and returns the session-present flag;
  the default keepalive is 0, as in the original client (which never sends PINGREQ).
* ``subscribe`` / ``unsubscribe`` / ``publish`` send and return at once, without waiting for the ack.
* ``disconnect`` waits (up to 4 s) for in-flight QoS 1/2 exchanges to finish and fails if they don't,
  unless the client is paused; then it sends DISCONNECT.
* ``terminate`` closes the socket without sending DISCONNECT.
* ``pause`` makes the client drop incoming PUBLISH packets without acknowledging them.

paho-mqtt refuses to send a few of the packets the original sends on purpose (a second CONNECT on one
connection, a wrong protocol name, an empty client id with clean session 0), so those are sent as raw
CONNECT packets (`raw_connect`). Two paho internals are touched, both only to mirror the original client:
``_handle_publish`` (to drop PUBLISH packets while paused) and ``_in_messages`` (incoming QoS 2 messages
still waiting for PUBREL, which the original's ``disconnect`` waits for).

As in the original, ``cleanup()`` runs before each test: it clears the sessions of both client ids and
deletes every retained message a ``#`` subscriber can see.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from tests.support import Server

HOST = "127.0.0.1"
TOPICS = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
WILDTOPICS = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
NOSUBSCRIBE_TOPICS = ("test/nosubscribe",)
CLIENT_IDS = ("myclientid", "myclientid2")
CONNACK_TIMEOUT = 5.0

Message = tuple[str, bytes, int, bool, int]  # (topic, payload, qos, retained, msgid), as in the original


class Callbacks:
    """What one client received: the original's ``Callbacks``."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.messages: list[Message] = []
        self.publisheds: list[int] = []
        self.subscribeds: list[tuple[int, list[int]]] = []  # (msgid, granted QoS / 0x80 per filter)
        self.unsubscribeds: list[int] = []
        self.last_message_at = 0.0


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _completed(info: paho.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except (RuntimeError, ValueError):  # paho gave up on it: the connection is gone
        return False


class InteropClient:
    """paho-mqtt 2.2.0 with the calls and semantics of the Paho testing client (see the module docstring)."""

    def __init__(self, port: int, client_id: str, callback: Callbacks | None = None) -> None:
        self.port = port
        self.client_id = client_id
        self.callback = callback
        self.paho: paho.Client | None = None
        self.paused = False
        self._inflight: list[paho.MQTTMessageInfo] = []
        self._disconnected = threading.Event()

    # -- paho callbacks ---------------------------------------------------------------------------------
    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self.callback is not None:
            self.callback.messages.append((msg.topic, msg.payload, msg.qos, msg.retain, msg.mid))
            self.callback.last_message_at = time.monotonic()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if self.callback is not None:
            self.callback.publisheds.append(mid)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if self.callback is not None:
            self.callback.subscribeds.append((mid, [rc.value for rc in reason_codes]))

    def _on_unsubscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if self.callback is not None:
            self.callback.unsubscribeds.append(mid)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._disconnected.set()

    @staticmethod
    def _drop_publish() -> MQTTErrorCode:
        return MQTTErrorCode.MQTT_ERR_SUCCESS  # paused: neither deliver nor acknowledge

    # -- the original client's API ----------------------------------------------------------------------
    def connect(
        self,
        *,
        cleansession: bool = True,
        keepalive: int = 0,
        will_topic: str | None = None,
        will_message: bytes = b"",
        will_qos: int = 2,
        will_retain: bool = False,
        silent: bool = False,
    ) -> int:
        """Connect; return the CONNACK session-present flag (0 or 1), raise if not accepted.

        `silent` stops the network loop once CONNACK is in, so nothing (no PINGREQ) is sent afterwards.
        """
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv311,
            clean_session=cleansession,
            reconnect_on_failure=False,
        )
        connacks: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.on_connect = lambda c, u, flags, rc, props: connacks.put((rc, flags))
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_disconnect = self._on_disconnect
        if will_topic is not None:
            client.will_set(will_topic, will_message, qos=will_qos, retain=will_retain)
        if self.paused:
            client._handle_publish = self._drop_publish
        self.paho = client
        self._inflight = []
        self._disconnected.clear()
        client.connect(HOST, self.port, keepalive)
        client.loop_start()
        try:
            rc, flags = connacks.get(timeout=CONNACK_TIMEOUT)
        except queue.Empty:
            client.loop_stop()
            raise ConnectionError(f"{self.client_id!r}: no CONNACK") from None
        if rc.is_failure:
            client.loop_stop()
            raise ConnectionRefusedError(f"{self.client_id!r}: CONNACK {rc}")
        if silent:
            client.loop_stop()
        return 0x01 if flags.session_present else 0x00

    def subscribe(self, topics: list[str], qoss: list[int]) -> int:
        assert self.paho is not None
        rc, mid = self.paho.subscribe(list(zip(topics, qoss, strict=True)))
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS, rc
        return mid

    def unsubscribe(self, topics: list[str]) -> int:
        assert self.paho is not None
        rc, mid = self.paho.unsubscribe(topics)
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS, rc
        return mid

    def publish(self, topic: str, payload: bytes, qos: int = 0, retained: bool = False) -> int:
        assert self.paho is not None
        info = self.paho.publish(topic, payload, qos, retain=retained)
        if qos > 0:
            self._inflight.append(info)
        return info.mid

    def _pending(self) -> tuple[list[int], list[int]]:
        """(incoming QoS 2 msgids awaiting PUBREL, outgoing QoS 1/2 msgids not completed)."""
        assert self.paho is not None
        incoming = list(self.paho._in_messages)
        outgoing = [info.mid for info in self._inflight if not _completed(info)]
        return incoming, outgoing

    def disconnect(self) -> None:
        client = self.paho
        assert client is not None
        if not self.paused:
            # The original waits for its in-flight exchanges (20 x 0.2 s), then asserts they all finished.
            wait_until(lambda: self._pending() == ([], []), timeout=4.0, interval=0.2)
            incoming, outgoing = self._pending()
            lost = " (the broker closed the connection)" if self._disconnected.is_set() else ""
            assert incoming == [], f"{self.client_id!r}: incoming QoS 2 not released by the broker{lost}: {incoming}"
            assert outgoing == [], (
                f"{self.client_id!r}: outgoing QoS 1/2 not acknowledged by the broker{lost}: {outgoing}"
            )
        client.disconnect()
        self._disconnected.wait(2.0)
        client.loop_stop()
        time.sleep(0.1)

    def terminate(self) -> None:
        """Drop the TCP connection without DISCONNECT."""
        client = self.paho
        assert client is not None
        client.loop_stop()
        sock = client.socket()
        assert sock is not None
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def pause(self) -> None:
        self.paused = True
        if self.paho is not None:
            self.paho._handle_publish = self._drop_publish

    def resume(self) -> None:
        self.paused = False
        if self.paho is not None and "_handle_publish" in vars(self.paho):
            del self.paho._handle_publish

    def close(self) -> None:
        """Teardown: stop the loop and drop the socket, whatever state the test left it in."""
        client = self.paho
        if client is None:
            return
        if client.socket() is not None and client.is_connected():
            with contextlib.suppress(Exception):
                client.disconnect()
                self._disconnected.wait(1.0)
        client.loop_stop()
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self.paho = None


# -- raw CONNECT packets, for what paho-mqtt refuses to send --------------------------------------------
def _utf8(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(
    client_id: str, *, cleansession: bool = True, keepalive: int = 0, protocol_name: str = "MQTT"
) -> bytes:
    body = _utf8(protocol_name) + bytes([4, 0x02 if cleansession else 0x00]) + keepalive.to_bytes(2, "big")
    body += _utf8(client_id)
    length, remaining = len(body), b""
    while True:
        length, byte = divmod(length, 128)
        remaining += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + remaining + body


def raw_connect(sock: socket.socket, packet: bytes, timeout: float = 1.0) -> str:
    """Send a CONNECT and say what came back: "accepted", "refused rc=N", "closed", "timeout" or "other ..."."""
    sock.settimeout(timeout)
    sock.sendall(packet)
    data = b""
    try:
        while len(data) < 4:
            chunk = sock.recv(4 - len(data))
            if not chunk:
                return "closed" if not data else f"other {data!r}"
            data += chunk
    except TimeoutError:
        return "timeout" if not data else f"other {data!r}"
    except ConnectionError:
        return "closed"
    if data[0] != 0x20 or data[1] != 0x02:
        return f"other {data!r}"
    return "accepted" if data[3] == 0 else f"refused rc={data[3]}"


# -- cleanup and fixtures -----------------------------------------------------------------------------------
def cleanup(port: int) -> None:
    """The original ``cleanup()``: clear both clients' sessions, then delete every retained message."""
    for clientid in CLIENT_IDS:
        curclient = InteropClient(port, clientid)
        curclient.connect(cleansession=True)
        time.sleep(0.1)
        curclient.disconnect()
        time.sleep(0.1)

    # The original subscribes to '#' and sleeps 2 s. Here: wait for SUBACK, then until no message has
    # arrived for 0.5 s (2 s at most); repeat until a pass finds nothing retained, so deletion is checked.
    for _ in range(3):
        callback = Callbacks()
        curclient = InteropClient(port, "clean retained", callback)
        curclient.connect(cleansession=True)
        curclient.subscribe(["#"], [0])
        wait_until(lambda cb=callback: bool(cb.subscribeds), timeout=2.0)
        start = time.monotonic()
        wait_until(
            lambda cb=callback, t0=start: (
                time.monotonic() - max(cb.last_message_at, t0) > 0.5 or time.monotonic() - t0 > 2.0
            ),
            timeout=2.5,
        )
        retained = sorted({message[0] for message in callback.messages if message[3]})
        for topic in retained:
            curclient.publish(topic, b"", 0, retained=True)
        curclient.disconnect()
        if not retained:
            return
    warnings.warn(f"cleanup could not delete retained messages on {retained}", stacklevel=2)


@pytest.fixture
def port(anon_server: Server) -> int:
    cleanup(anon_server.mqtt_port)
    return anon_server.mqtt_port


@pytest.fixture
def callback() -> Callbacks:
    return Callbacks()


@pytest.fixture
def callback2() -> Callbacks:
    return Callbacks()


@pytest.fixture
def aclient(port: int, callback: Callbacks) -> Iterator[InteropClient]:
    client = InteropClient(port, "myclientid", callback)
    yield client
    client.close()


@pytest.fixture
def bclient(port: int, callback2: Callbacks) -> Iterator[InteropClient]:
    client = InteropClient(port, "myclientid2", callback2)
    yield client
    client.close()


# -- the tests ------------------------------------------------------------------------------------------------
def test_basic(port: int, aclient: InteropClient, callback: Callbacks) -> None:
    """client_test.py ``testBasic``: connect, session-present 0, QoS 0/1/2 round trip, bad CONNECTs refused."""
    aclient.connect()
    aclient.disconnect()

    connack = aclient.connect()
    assert connack == 0x00  # Session present
    aclient.subscribe([TOPICS[0]], [2])
    aclient.publish(TOPICS[0], b"qos 0")
    aclient.publish(TOPICS[0], b"qos 1", 1)
    aclient.publish(TOPICS[0], b"qos 2", 2)
    time.sleep(2)
    aclient.disconnect()
    assert len(callback.messages) == 3, callback.messages

    # A second CONNECT on the same network connection "should fail".
    with socket.create_connection((HOST, port)) as sock:
        assert raw_connect(sock, connect_packet("myclientid")) == "accepted"
        second = raw_connect(sock, connect_packet("myclientid"))
        assert second != "accepted", "a second CONNECT on one connection was accepted"

    # A wrong protocol name "should fail".
    with socket.create_connection((HOST, port)) as sock:
        wrong_name = raw_connect(sock, connect_packet("myclientid", protocol_name="hj"))
        assert wrong_name != "accepted", "a CONNECT with protocol name 'hj' was accepted"


def test_retained_messages(aclient: InteropClient, callback: Callbacks) -> None:
    """client_test.py ``test_retained_messages``: retained QoS 0/1/2 messages are kept, and cleared by empty ones."""
    # retained messages
    callback.clear()
    connack = aclient.connect(cleansession=True)
    assert connack == 0x00  # Session present
    aclient.publish(TOPICS[1], b"qos 0", 0, retained=True)
    aclient.publish(TOPICS[2], b"qos 1", 1, retained=True)
    aclient.publish(TOPICS[3], b"qos 2", 2, retained=True)
    time.sleep(1)
    aclient.subscribe([WILDTOPICS[5]], [2])
    time.sleep(1)
    aclient.disconnect()

    assert len(callback.messages) == 3, callback.messages

    # clear retained messages
    callback.clear()
    connack = aclient.connect(cleansession=True)
    assert connack == 0x00  # Session present
    aclient.publish(TOPICS[1], b"", 0, retained=True)
    aclient.publish(TOPICS[2], b"", 1, retained=True)
    aclient.publish(TOPICS[3], b"", 2, retained=True)
    time.sleep(1)  # wait for QoS 2 exchange to be completed
    aclient.subscribe([WILDTOPICS[5]], [2])
    time.sleep(1)
    aclient.disconnect()

    assert len(callback.messages) == 0, f"callback messages is {callback.messages}"


def test_will_message(aclient: InteropClient, bclient: InteropClient, callback2: Callbacks) -> None:
    """client_test.py ``will_message_test``: a client that drops its connection has its will published.

    (Upstream the method lacks the ``test`` prefix, so unittest never collects it; it is ported anyway.)
    """
    callback2.clear()
    assert len(callback2.messages) == 0, callback2.messages
    connack = aclient.connect(
        cleansession=True, will_topic=TOPICS[2], will_message=b"client not disconnected", keepalive=2
    )
    assert connack == 0x00  # Session present
    bclient.connect(cleansession=False)
    bclient.subscribe([TOPICS[2]], [2])
    time.sleep(0.1)
    aclient.terminate()
    # The original sleeps 5 s; wait for the will up to that long, then a moment more for any duplicate.
    wait_until(lambda: len(callback2.messages) >= 1, timeout=5)
    time.sleep(0.5)
    bclient.disconnect()
    assert len(callback2.messages) == 1, callback2.messages  # should have the will message


def test_zero_length_clientid(port: int) -> None:
    """client_test.py ``test_zero_length_clientid``: empty client id refused with clean session 0, allowed with 1."""
    # paho-mqtt will not send an empty client id with clean session 0, so that CONNECT is sent raw.
    with socket.create_connection((HOST, port)) as sock:
        outcome = raw_connect(sock, connect_packet("", cleansession=False))  # should be rejected
    assert outcome != "accepted", "empty client id with clean session 0 was accepted"

    client0 = InteropClient(port, "")
    try:
        client0.connect(cleansession=True)  # should work
        client0.disconnect()
    finally:
        client0.close()


def test_offline_message_queueing(aclient: InteropClient, bclient: InteropClient, callback: Callbacks) -> None:
    """client_test.py ``test_offline_message_queueing``: QoS 1/2 (and maybe 0) queued for a disconnected session."""
    # message queueing for offline clients
    callback.clear()

    aclient.connect(cleansession=False)
    aclient.subscribe([WILDTOPICS[5]], [2])
    aclient.disconnect()

    connack = bclient.connect(cleansession=True)
    assert connack == 0x00  # Session present
    bclient.publish(TOPICS[1], b"qos 0", 0)
    bclient.publish(TOPICS[2], b"qos 1", 1)
    bclient.publish(TOPICS[3], b"qos 2", 2)
    time.sleep(2)
    bclient.disconnect()

    connack = aclient.connect(cleansession=False)
    assert connack == 0x01  # Session present
    time.sleep(2)
    aclient.disconnect()

    assert len(callback.messages) in [2, 3], callback.messages
    print(
        "This server {} queueing QoS 0 messages for offline clients".format(
            "is" if len(callback.messages) == 3 else "is not"
        )
    )


def test_overlapping_subscriptions(aclient: InteropClient, callback: Callbacks, callback2: Callbacks) -> None:
    """client_test.py ``test_overlapping_subscriptions``: one message at the highest QoS, or one per subscription."""
    # When there is more than one matching subscription for the same client for a topic, the server may send
    # back one message with the highest QoS of any matching subscription, or one message for each subscription
    # with a matching QoS.
    callback.clear()
    callback2.clear()
    aclient.connect()
    aclient.subscribe([WILDTOPICS[6], WILDTOPICS[0]], [2, 1])
    aclient.publish(TOPICS[3], b"overlapping topic filters", 2)
    time.sleep(1)
    assert len(callback.messages) in [1, 2], callback.messages
    if len(callback.messages) == 1:
        print("This server is publishing one message for all matching overlapping subscriptions, not one for each.")
        assert callback.messages[0][2] == 2, callback.messages
    else:
        print("This server is publishing one message per each matching overlapping subscription.")
        assert (callback.messages[0][2] == 2 and callback.messages[1][2] == 1) or (
            callback.messages[0][2] == 1 and callback.messages[1][2] == 2
        ), callback.messages
    aclient.disconnect()


def test_keepalive(aclient: InteropClient, bclient: InteropClient, callback2: Callbacks) -> None:
    """client_test.py ``test_keepalive``: a silent client is dropped after its keepalive, and its will published."""
    # We should be kicked off by the server if we don't send or receive any data, and don't send any pings either.
    callback2.clear()
    aclient.connect(cleansession=True, keepalive=5, will_topic=TOPICS[4], will_message=b"keepalive expiry", silent=True)
    bclient.connect(cleansession=True, keepalive=0)
    bclient.subscribe([TOPICS[4]], [2])
    # The original sleeps 15 s; the broker must act after 1.5 x 5 s, so wait for the will up to 15 s.
    wait_until(lambda: len(callback2.messages) >= 1, timeout=15)
    time.sleep(0.5)
    bclient.disconnect()
    assert len(callback2.messages) == 1, f"length should be 1: {callback2.messages}"  # should have the will message


def test_redelivery_on_reconnect(bclient: InteropClient, callback: Callbacks, callback2: Callbacks) -> None:
    """client_test.py ``test_redelivery_on_reconnect``: unacknowledged QoS 1/2 messages are resent on reconnect."""
    # When a QoS 1 or 2 exchange has not been completed, the server should retry the appropriate MQTT packets.
    callback.clear()
    callback2.clear()
    bclient.connect(cleansession=False)
    bclient.subscribe([WILDTOPICS[6]], [2])
    bclient.pause()  # stops responding to incoming publishes
    bclient.publish(TOPICS[1], b"", 1, retained=False)
    bclient.publish(TOPICS[3], b"", 2, retained=False)
    time.sleep(1)
    bclient.disconnect()
    assert len(callback2.messages) == 0, f"length should be 0: {callback2.messages}"
    bclient.resume()
    bclient.connect(cleansession=False)
    time.sleep(3)
    assert len(callback2.messages) == 2, f"length should be 2: {callback2.messages}"
    bclient.disconnect()


@pytest.mark.xfail(
    strict=False,
    reason="no topic filter is refused to anonymous clients outside the reserved roots; "
    "'test/nosubscribe' is granted rather than answered with SUBACK 0x80",
)
def test_subscribe_failure(aclient: InteropClient, callback: Callbacks) -> None:
    """client_test.py ``test_subscribe_failure``: a filter the server will not allow gets SUBACK return code 0x80."""
    # One way of getting a negative SUBACK is to subscribe to a topic which is not allowed to be subscribed to.
    callback.clear()
    aclient.connect()
    aclient.subscribe([NOSUBSCRIBE_TOPICS[0]], [2])
    time.sleep(0.2)
    # subscribeds is a list of (msgid, [qos])
    assert callback.subscribeds[0][1][0] == 0x80, f"return code should be 0x80 {callback.subscribeds}"


def test_dollar_topics(bclient: InteropClient, callback2: Callbacks) -> None:
    """client_test.py ``test_dollar_topics``: a filter starting with a wildcard does not match '$' topics."""
    # Publishing to a topic which starts with a $ may not be allowed on some servers (which is entirely valid),
    # so this test will not work and should be omitted in that case.
    callback2.clear()
    bclient.connect(cleansession=True, keepalive=0)
    bclient.subscribe([WILDTOPICS[5]], [2])
    time.sleep(1)  # wait for all retained messages, hopefully
    callback2.clear()
    bclient.publish("$" + TOPICS[1], b"", 1, retained=False)
    time.sleep(0.2)
    assert len(callback2.messages) == 0, callback2.messages
    bclient.disconnect()


def test_unsubscribe(aclient: InteropClient, bclient: InteropClient, callback2: Callbacks) -> None:
    """client_test.py ``test_unsubscribe``: after UNSUBSCRIBE, no more messages for that filter; others unaffected."""
    callback2.clear()
    bclient.connect(cleansession=True)
    bclient.subscribe([TOPICS[0]], [2])
    bclient.subscribe([TOPICS[1]], [2])
    bclient.subscribe([TOPICS[2]], [2])
    time.sleep(1)  # wait for all retained messages, hopefully
    # Unsubscribed from one topic; the publishes come on another connection, so they are sent only
    # once the UNSUBACK is in (upstream sleeps instead: under load the publish could overtake it)
    mid = bclient.unsubscribe([TOPICS[0]])
    assert wait_until(lambda: mid in callback2.unsubscribeds, 5), callback2.unsubscribeds

    aclient.connect(cleansession=True)
    aclient.publish(TOPICS[0], b"", 1, retained=False)
    aclient.publish(TOPICS[1], b"", 1, retained=False)
    aclient.publish(TOPICS[2], b"", 1, retained=False)
    time.sleep(2)

    bclient.disconnect()
    aclient.disconnect()
    assert len(callback2.messages) == 2, callback2.messages
