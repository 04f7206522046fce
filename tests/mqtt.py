"""A real MQTT client (paho-mqtt 2.x, MQTT 3.1.1) with awaitable calls for async tests."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

BARRIER_FILTER = "gatehouse-test/barrier"


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Client:
    def __init__(self, client_id: str | None = None, *, clean_session: bool = True, transport: str = "tcp") -> None:
        self._chosen_id = client_id is not None
        self._clean_session = clean_session
        self._transport = transport  # "tcp" or "websockets"
        self._make_paho(client_id or f"t-{uuid.uuid4().hex[:10]}")

    def _make_paho(self, client_id: str) -> None:
        self.client_id = client_id
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=self._clean_session,
            transport=self._transport,
        )
        self.messages: queue.Queue[Message] = queue.Queue()
        self._connack: queue.Queue[int] = queue.Queue()
        self._suback: dict[int, queue.Queue[list[int]]] = {}
        self._unsuback: dict[int, queue.Queue[None]] = {}
        self._gone = False
        self.disconnected = threading.Event()
        self._callbacks()

    def _callbacks(self) -> None:
        self.paho.on_connect = self._on_connect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_unsubscribe = self._on_unsubscribe
        self.paho.on_disconnect = self._on_disconnect

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._connack.put(reason_code.value if hasattr(reason_code, "value") else int(reason_code))

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        self.messages.put(Message(msg.topic, msg.payload, msg.qos, msg.retain))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        self._suback.setdefault(mid, queue.Queue()).put([rc.value for rc in reason_codes])

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        self._unsuback.setdefault(mid, queue.Queue()).put(None)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.disconnected.set()

    async def connect(
        self,
        port: int,
        username: str | None = None,
        password: str | None = None,
        *,
        ca: Path | None = None,
        keepalive: int = 30,
        will: tuple[str, bytes, int, bool] | None = None,
        timeout: float = 10,
    ) -> int:
        """Connect and return the CONNACK return code (0 accepted, 5 not authorized, ...)."""
        if username and not self._chosen_id and username != "provision":
            # A device's client id is its username or starts with "<username>-" (docs/broker.md).
            self._make_paho(f"{username}-{uuid.uuid4().hex[:10]}")
        if username is not None:
            self.paho.username_pw_set(username, password)
        if ca is not None:
            self.paho.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            self.paho.will_set(will[0], will[1], qos=will[2], retain=will[3])
        self.paho.reconnect_delay_set(60, 120)  # never reconnect on its own during a test
        await asyncio.to_thread(self.paho.connect, "localhost" if ca else "127.0.0.1", port, keepalive)
        self.paho.loop_start()
        rc = await asyncio.to_thread(self._connack.get, True, timeout)
        if rc != 0:
            self.paho.loop_stop()
        return rc

    async def subscribe(self, topic: str, qos: int = 1, timeout: float = 5) -> int:
        """Subscribe and return the granted QoS (0x80 = refused)."""
        result, mid = self.paho.subscribe(topic, qos)
        assert result == paho.MQTT_ERR_SUCCESS
        box = self._suback.setdefault(mid, queue.Queue())
        codes = await asyncio.to_thread(box.get, True, timeout)
        return codes[0]

    async def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, timeout: float = 10
    ) -> bool:
        """Publish; for QoS 1 wait for the PUBACK. Returns whether it was acknowledged in time."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return True
        await asyncio.to_thread(info.wait_for_publish, timeout)
        return info.is_published()

    async def receive(self, timeout: float = 5) -> Message:
        return await asyncio.to_thread(self.messages.get, True, timeout)

    async def receive_on(self, topic: str, timeout: float = 5) -> Message:
        """The next message on `topic`, skipping others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"nothing on {topic}")
            try:
                msg = await self.receive(left)
            except queue.Empty as exc:
                raise TimeoutError(f"nothing on {topic}") from exc
            if msg.topic == topic:
                return msg

    async def nothing(self, wait: float = 0.7) -> list[Message]:
        """Messages that arrive within `wait` seconds (tests assert this is empty)."""
        await asyncio.sleep(wait)
        got = []
        while not self.messages.empty():
            got.append(self.messages.get_nowait())
        return got

    async def wait_disconnected(self, timeout: float) -> bool:
        return await asyncio.to_thread(self.disconnected.wait, timeout)

    async def barrier(self, timeout: float = 5) -> bool:
        """An UNSUBSCRIBE round trip (of a filter never subscribed to, which the server must still
        acknowledge [MQTT-3.10.4-4/5]): once the UNSUBACK is in, the broker has read every packet
        this client sent before, and whatever it wrote to this connection before has arrived.
        False if no UNSUBACK came within `timeout` (the connection is gone)."""
        result, mid = self.paho.unsubscribe(BARRIER_FILTER)
        assert result == paho.MQTT_ERR_SUCCESS, result
        box = self._unsuback.setdefault(mid, queue.Queue())
        try:
            await asyncio.to_thread(box.get, True, timeout)
        except queue.Empty:
            return False
        return True

    async def disconnect(self, timeout: float = 5) -> None:
        """DISCONNECT, then wait until the server closes the connection, which it does once it has
        handled the DISCONNECT (MQTT 3.1.1 §3.14.4). paho closes its socket right after writing
        DISCONNECT, so the DISCONNECT is written here, after a barrier flushed what paho had queued."""
        assert await self.barrier(timeout), f"{self.client_id}: no UNSUBACK within {timeout}s"
        if self._transport == "websockets":
            # paho's WebSocket wrapper has no raw socket to write the DISCONNECT frame on: paho
            # sends it and closes; the caller watches for its effect (e.g. presence going offline).
            self._gone = True
            self.paho.disconnect()
            self.paho.loop_stop()
            self.disconnected.set()
            return
        self.paho.loop_stop()
        sock = self.paho.socket()
        assert sock is not None, f"{self.client_id}: not connected"
        self._gone = True

        def until_closed() -> bool:
            deadline = time.monotonic() + timeout
            try:
                sock.sendall(b"\xe0\x00")
                while (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    if not sock.recv(65536):
                        return True
            except TimeoutError:
                return False
            except OSError:  # reset: closed as well
                return True
            finally:
                with contextlib.suppress(OSError):
                    sock.close()
            return False

        closed = await asyncio.to_thread(until_closed)
        self.disconnected.set()
        assert closed, f"{self.client_id}: the server did not close the connection {timeout}s after DISCONNECT"

    def close(self) -> None:
        if self._gone:
            return
        self.paho.disconnect()
        self.paho.loop_stop()

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT (the will is due)."""
        self.paho.loop_stop()
        sock = self.paho.socket()
        if sock is not None:
            sock.close()
