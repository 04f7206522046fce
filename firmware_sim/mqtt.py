"""Minimal asyncio MQTT 3.1.1 client for simulators and load generators.

One coroutine-driven connection per `MqttClient`, no threads, so one process can hold
thousands of connections. QoS 0 and 1 only. Construct and use inside a running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_mod
import time

# Packet types (upper nibble of the fixed header).
CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14
MAX_REMAINING_LENGTH = 268_435_455

Will = tuple[str, bytes, int, bool]  # topic, payload, qos, retain


class MqttError(Exception):
    """Root of every error raised by this module."""


class ConnectRefused(MqttError):
    """The broker answered CONNECT with a non-zero return code."""

    def __init__(self, rc: int) -> None:
        super().__init__(f"connection refused, CONNACK rc={rc}")
        self.rc = rc


class ConnectionClosed(MqttError):
    """The connection ended while an operation was waiting on it."""


def encode_remaining_length(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise MqttError(f"packet too large: {n} bytes")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_str(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    if len(b) > 0xFFFF:
        raise MqttError("string longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def packet(first_byte: int, body: bytes = b"") -> bytes:
    return bytes((first_byte,)) + encode_remaining_length(len(body)) + body


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one packet; returns (first byte, body). readexactly absorbs partial reads."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    for _ in range(4):
        digit = (await reader.readexactly(1))[0]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    else:
        raise MqttError("malformed remaining length")
    return first, await reader.readexactly(length) if length else b""


class MqttClient:
    def __init__(self, *, auto_ping: bool = True) -> None:
        self.auto_ping = auto_ping
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        # Resolves with None on a clean disconnect, else with the exception that ended it.
        self.closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.keepalive = 60
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._next_id = 0
        self._last_send = 0.0
        self._ping_outstanding = False

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self.closed.done()

    async def connect(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | bytes | None = None,
        keepalive: int = 60,
        clean_session: bool = True,
        will: Will | None = None,
        ssl: ssl_mod.SSLContext | None = None,
        timeout: float = 10,
        local_addr: tuple[str, int] | None = None,
    ) -> int:
        """Open the connection and send CONNECT; returns the CONNACK return code (always 0)."""
        if self.connected:
            raise MqttError("already connected")
        if self.closed.done():
            self.closed = asyncio.get_running_loop().create_future()
        self.keepalive = keepalive
        flags = 0x02 if clean_session else 0
        payload = encode_str(client_id)
        if will is not None:
            w_topic, w_payload, w_qos, w_retain = will
            flags |= 0x04 | (w_qos << 3) | (0x20 if w_retain else 0)
            payload += encode_str(w_topic) + encode_str(w_payload)
        if username is not None:
            flags |= 0x80
            payload += encode_str(username)
        if password is not None:
            flags |= 0x40
            payload += encode_str(password)
        body = encode_str("MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big") + payload
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=ssl, local_addr=local_addr)
                writer.write(packet(CONNECT << 4, body))
                first, ack = await read_packet(reader)
            if first >> 4 != CONNACK or len(ack) != 2:
                raise MqttError(f"expected CONNACK, got packet type {first >> 4}")
            rc = ack[1]
            if rc != 0:
                raise ConnectRefused(rc)
        except BaseException as exc:
            if writer is not None:
                writer.close()
            if isinstance(exc, asyncio.IncompleteReadError):
                lost = ConnectionClosed("connection closed by peer before CONNACK")
                self.closed.set_result(lost)
                raise lost from exc
            self.closed.set_result(exc)
            raise
        self._reader, self._writer = reader, writer
        self._last_send = time.monotonic()
        self._ping_outstanding = False
        self._tasks = [asyncio.create_task(self._read_loop())]
        if self.auto_ping and keepalive > 0:
            self._tasks.append(asyncio.create_task(self._ping_loop()))
        return rc

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Send PUBLISH; for QoS 1, return once the PUBACK arrives."""
        if qos not in (0, 1):
            raise MqttError("only QoS 0 and 1 are supported")
        first = (PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
        if qos == 0:
            await self._send(packet(first, encode_str(topic) + payload))
            return
        pid, fut = self._new_pending()
        try:
            await self._send(packet(first, encode_str(topic) + pid.to_bytes(2, "big") + payload))
            await fut
        finally:
            self._pending.pop(pid, None)

    async def subscribe(self, topic_filter: str, qos: int = 0) -> int:
        """Subscribe to one filter; returns the SUBACK return code (granted QoS, or 0x80 refused)."""
        pid, fut = self._new_pending()
        try:
            await self._send(
                packet((SUBSCRIBE << 4) | 0x02, pid.to_bytes(2, "big") + encode_str(topic_filter) + bytes((qos,)))
            )
            return await fut
        finally:
            self._pending.pop(pid, None)

    async def disconnect(self) -> None:
        """Send DISCONNECT and close; a no-op when not connected."""
        if not self.connected:
            return
        with contextlib.suppress(OSError, MqttError):
            await self._send(packet(DISCONNECT << 4))
        await self._close(None)

    # -- internals ---------------------------------------------------------------------------

    def _new_pending(self) -> tuple[int, asyncio.Future[int]]:
        if len(self._pending) >= 0xFFFF:
            raise MqttError("all 65535 packet ids are in flight")
        while True:
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._pending:
                break
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        return self._next_id, fut

    async def _send(self, data: bytes) -> None:
        if not self.connected:
            raise ConnectionClosed("not connected")
        assert self._writer is not None
        self._writer.write(data)
        self._last_send = time.monotonic()
        await self._writer.drain()

    async def _read_loop(self) -> None:
        assert self._reader is not None and self._writer is not None
        exc: BaseException | None
        try:
            while True:
                first, body = await read_packet(self._reader)
                self._handle(first, body)
        except asyncio.IncompleteReadError:
            exc = ConnectionClosed("connection closed by peer")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            exc = e
        await self._close(exc)

    def _handle(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            qos = (first >> 1) & 0x03
            tlen = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + tlen].decode("utf-8")
            pos = 2 + tlen
            if qos == 1:
                assert self._writer is not None
                self._writer.write(packet(PUBACK << 4, body[pos : pos + 2]))  # drained by the next send
                pos += 2
            elif qos != 0:
                raise MqttError("QoS 2 PUBLISH received; this client only subscribes at QoS 0/1")
            self.messages.put_nowait((topic, body[pos:]))
        elif kind in (PUBACK, SUBACK):
            fut = self._pending.get(int.from_bytes(body[:2], "big"))
            if fut is not None and not fut.done():
                fut.set_result(body[2] if kind == SUBACK else 0)
        elif kind == PINGRESP:
            self._ping_outstanding = False
        else:
            raise MqttError(f"unexpected packet type {kind}")

    async def _ping_loop(self) -> None:
        interval = self.keepalive / 2
        while True:
            await asyncio.sleep(max(0.0, self._last_send + interval - time.monotonic()))
            if self._ping_outstanding:
                await self._close(MqttError("no PINGRESP within keepalive/2"))
                return
            if time.monotonic() - self._last_send >= interval:
                self._ping_outstanding = True
                try:
                    await self._send(packet(PINGREQ << 4))
                except (OSError, MqttError) as exc:
                    await self._close(exc)
                    return
                await asyncio.sleep(interval)

    async def _close(self, exc: BaseException | None) -> None:
        if self.closed.done():
            return
        self.closed.set_result(exc)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(f"connection ended: {exc!r}" if exc else "disconnected"))
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
