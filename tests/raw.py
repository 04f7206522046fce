"""A raw MQTT 3.1.1 client for broker tests: it acknowledges nothing unless told to."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


def utf8(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def packet(first_byte: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first_byte]) + bytes(encoded) + body


def connect_packet(
    client_id: str,
    *,
    clean: bool = True,
    keepalive: int = 60,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes, int, bool] | None = None,
) -> bytes:
    """A CONNECT packet (MQTT 3.1.1); `will` is (topic, message, qos, retain)."""
    flags, payload = (0x02 if clean else 0x00), utf8(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += utf8(topic) + utf8(message)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += utf8(password)
    return packet(0x10, utf8("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + payload)


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int
    dup: bool
    retain: bool
    packet_id: int | None


def parse_publish(packet: Packet) -> Publish:
    n = int.from_bytes(packet.body[:2], "big")
    topic = packet.body[2 : 2 + n].decode()
    qos = (packet.flags >> 1) & 3
    rest = packet.body[2 + n :]
    packet_id = None
    if qos:
        packet_id, rest = int.from_bytes(rest[:2], "big"), rest[2:]
    return Publish(topic, rest, qos, bool(packet.flags & 0x08), bool(packet.flags & 0x01), packet_id)


class RawSession:
    """MQTT 3.1.1 by hand: it acknowledges nothing unless told to, so a test controls every PUBACK.
    PUBLISH packets that arrive while it waits for something else are kept for `next_publish`."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.backlog: deque[Publish] = deque()
        self._ids = 0

    async def connect(
        self,
        port: int,
        client_id: str,
        *,
        clean: bool = True,
        keepalive: int = 60,
        username: str | None = None,
        password: str | None = None,
        rcvbuf: int | None = None,
    ) -> tuple[int, int]:
        """Connect; return (session present, CONNACK return code)."""
        if rcvbuf is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        else:  # a small receive buffer: a client that stops reading backs up into the broker sooner
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            self.reader, self.writer = await asyncio.open_connection(sock=sock)
        await self.send(
            connect_packet(client_id, clean=clean, keepalive=keepalive, username=username, password=password)
        )
        connack = await self.read(5)
        assert connack is not None and connack.kind == CONNACK, connack
        return connack.body[0] & 0x01, connack.body[1]

    async def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    def _next_id(self) -> int:
        self._ids = self._ids % 65535 + 1
        return self._ids

    async def read(self, timeout: float) -> Packet | None:
        """The next packet, or None if none starts within `timeout`. EOFError if the server closed."""
        assert self.reader is not None
        try:
            first = await asyncio.wait_for(self.reader.read(1), timeout)
        except TimeoutError:
            return None
        if not first:
            raise EOFError("closed by the server")
        length, shift = 0, 0
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = await asyncio.wait_for(self.reader.readexactly(length), 10)
        return Packet(first[0] >> 4, first[0] & 0x0F, body)

    async def expect(self, kind: int, timeout: float = 5) -> Packet:
        """Read until a packet of `kind` arrives (keeping PUBLISH packets met on the way)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            packet = await self.read(left)
            if packet is None:
                break
            if packet.kind == kind:
                return packet
            if packet.kind == PUBLISH:
                self.backlog.append(parse_publish(packet))
        raise AssertionError(f"no packet of type {kind} within {timeout}s")

    async def next_publish(self, timeout: float = 5) -> Publish | None:
        """The next PUBLISH received, or None if none arrives within `timeout`."""
        if self.backlog:
            return self.backlog.popleft()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            packet = await self.read(left)
            if packet is None:
                return None
            if packet.kind == PUBLISH:
                return parse_publish(packet)
        return None

    async def publishes(self, wait: float) -> list[Publish]:
        """Every PUBLISH that arrives within `wait` seconds."""
        got = list(self.backlog)
        self.backlog.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            packet = await self.read(left)
            if packet is None:
                break
            if packet.kind == PUBLISH:
                got.append(parse_publish(packet))
        return got

    async def subscribe(self, topic_filter: str, qos: int) -> int:
        pid = self._next_id()
        await self.send(packet(0x82, pid.to_bytes(2, "big") + utf8(topic_filter) + bytes([qos])))
        suback = await self.expect(SUBACK)
        assert int.from_bytes(suback.body[:2], "big") == pid
        return suback.body[2]

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> int | None:
        pid = self._next_id() if qos else None
        body = utf8(topic) + (pid.to_bytes(2, "big") if pid else b"") + payload
        await self.send(packet(0x30 | (qos << 1) | (1 if retain else 0), body))
        return pid

    async def ack(self, packet_id: int | None, kind: int = PUBACK) -> None:
        assert packet_id is not None
        await self.send(packet((kind << 4) | (0x02 if kind == PUBREL else 0), packet_id.to_bytes(2, "big")))

    async def ping(self, timeout: float = 5) -> None:
        """PINGREQ and wait for PINGRESP: the connection is up and the broker answers."""
        await self.send(b"\xc0\x00")
        await self.expect(PINGRESP, timeout)

    async def disconnect(self, *, wait: float | None = None) -> None:
        """DISCONNECT and close. With `wait`, first wait (up to `wait` seconds) for the server to
        close its end, which it does once it has handled the DISCONNECT (MQTT 3.1.1 §3.14.4): the
        barrier before a test reconnects with the same client id or publishes to the session."""
        with contextlib.suppress(OSError):
            await self.send(b"\xe0\x00")
        if wait is not None:
            assert await self.closed_by_server(wait), (
                f"the server did not close the connection {wait}s after DISCONNECT"
            )
        self.close()

    async def closed_by_server(self, timeout: float) -> bool:
        """Read until the server closes the socket (True) or time runs out (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                packet = await self.read(left)
                if packet is None:
                    return False
                if packet.kind == PUBLISH:
                    self.backlog.append(parse_publish(packet))
        except (EOFError, asyncio.IncompleteReadError, ConnectionError):
            return True
        return False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
