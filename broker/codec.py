"""MQTT 3.1.1 packets in and out: our framing and strict checks around amqtt's packet classes.

The rest of `broker/` sees only the frozen packets defined here; amqtt 0.12.1's classes encode and
decode. We frame each packet ourselves (fixed header, then exactly `remaining length` bytes) and
check what amqtt's decoder lets through before it runs: its string decoder turns invalid UTF-8
into `str(bytes)` and miscounts the length, so without our framing the rest of a payload was
parsed as packets. Anything malformed raises `Malformed`; the connection closes [MQTT-4.8.0-1].
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import BufferReader
from amqtt.errors import AMQTTError, MQTTError
from amqtt.mqtt import packet_class
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.unsuback import UnsubackPacket

CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 3, 4, 5, 6, 7
SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 8, 10, 12, 14
# [MQTT-2.2.2-1/2] fixed-header flags of every packet a client sends, PUBLISH aside.
_FLAGS = {
    CONNECT: 0,
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 2,
    PUBCOMP: 0,
    SUBSCRIBE: 2,
    UNSUBSCRIBE: 2,
    PINGREQ: 0,
    DISCONNECT: 0,
}


class Malformed(Exception):
    """A packet that breaks MQTT 3.1.1: the connection is closed."""


class TooLarge(Malformed):
    def __init__(self, size: int) -> None:
        super().__init__(f"{size}-byte packet")
        self.size = size


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Connect:
    protocol: str
    level: int
    client_id: str
    clean: bool
    keepalive: int
    username: str | None
    password: str | None
    will: Will | None


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    filters: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    filters: list[str]


@dataclass(frozen=True, slots=True)
class Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP."""

    kind: int
    packet_id: int


@dataclass(frozen=True, slots=True)
class Control:
    """PINGREQ or DISCONNECT."""

    kind: int


Packet = Connect | Publish | Subscribe | Unsubscribe | Ack | Control


# --- reading ------------------------------------------------------------------------------------


async def read_frame(reader: Any, max_size: int) -> tuple[int, int, bytes] | None:
    """The next packet's (type, flags, body), None at a clean end of stream before a packet.

    `reader.readexactly(n)` raises `asyncio.IncompleteReadError` when the stream ends early.
    """
    try:
        first = (await reader.readexactly(1))[0]
    except asyncio.IncompleteReadError:
        return None
    length, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise Malformed("remaining length longer than 4 bytes")
    if length > max_size:
        raise TooLarge(length)
    body = await reader.readexactly(length) if length else b""
    return first >> 4, first & 0x0F, body


class _Body:
    """A cursor over one packet's bytes; every read is bounds-checked."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise Malformed("packet shorter than its contents")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def binary(self) -> bytes:
        return self.take(self.uint16())

    def string(self) -> str:
        return text(self.binary())


def text(raw: bytes) -> str:
    """An MQTT UTF-8 string: well-formed UTF-8 without U+0000 [MQTT-1.5.3-1/2]."""
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed("invalid UTF-8 in a string") from exc
    if "\x00" in value:
        raise Malformed("U+0000 in a string")
    return value


def _check(kind: int, flags: int, body: bytes) -> bool:
    """Our strict pass over the raw bytes, before amqtt decodes them; False: do not decode further."""
    if kind == PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise Malformed("PUBLISH with QoS 3")
        cur = _Body(body)
        if not cur.string():
            raise Malformed("empty topic name [MQTT-4.7.3-1]")
        if qos and cur.uint16() == 0:
            raise Malformed("packet id 0")
        return True
    if kind not in _FLAGS:
        raise Malformed(f"packet type {kind} is never sent by a client")
    if flags != _FLAGS[kind]:
        raise Malformed(f"reserved flags {flags:#x} on packet type {kind}")
    cur = _Body(body)
    if kind == CONNECT:
        return _check_connect(cur)
    if kind in (SUBSCRIBE, UNSUBSCRIBE):
        if cur.uint16() == 0:
            raise Malformed("packet id 0")
        if not cur.left():
            raise Malformed("no topic filter [MQTT-3.8.3-3, 3.10.3-2]")
        while cur.left():
            cur.string()
            if kind == SUBSCRIBE and cur.take(1)[0] > 2:
                raise Malformed("requested QoS above 2 or reserved bits set [MQTT-3.8.3-4]")
    elif kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        if len(body) != 2 or cur.uint16() == 0:
            raise Malformed("acknowledgement without a valid packet id")
    elif body:
        raise Malformed(f"packet type {kind} with a body")
    return True


def _check_connect(cur: _Body) -> bool:
    """True for MQTT 3.1.1; another protocol is answered with CONNACK 1 [MQTT-3.1.2-2], unread."""
    if cur.string() != "MQTT" or cur.take(1)[0] != 4:
        return False
    flags = cur.take(1)[0]
    cur.take(2)
    if flags & 0x01:
        raise Malformed("CONNECT reserved flag set [MQTT-3.1.2-3]")
    will, will_qos = bool(flags & 0x04), (flags >> 3) & 3
    if will_qos == 3:
        raise Malformed("will QoS 3 [MQTT-3.1.2-14]")
    if not will and (will_qos or flags & 0x20):
        raise Malformed("will QoS or retain without a will [MQTT-3.1.2-13/15]")
    if flags & 0x40 and not flags & 0x80:
        raise Malformed("password without a user name [MQTT-3.1.2-22]")
    cur.string()  # client id
    if will:
        cur.string()
        cur.binary()
    if flags & 0x80:
        cur.string()
    if flags & 0x40:
        cur.binary()  # binary data, not a string
    if cur.left():
        raise Malformed("bytes after the CONNECT payload")
    return True


async def decode(kind: int, flags: int, body: bytes) -> Packet:
    """Check a framed packet strictly, then decode it with amqtt's packet class."""
    if not _check(kind, flags, body):
        name = _Body(body)
        return Connect(name.string(), name.take(1)[0], "", True, 0, None, None, None)
    header = MQTTFixedHeader(kind, flags, len(body))
    try:
        amqtt_packet = await packet_class(header).from_stream(BufferReader(body), fixed_header=header)
    except (AMQTTError, MQTTError, ValueError) as exc:  # e.g. a wildcard in a PUBLISH topic [MQTT-3.3.2-2]
        raise Malformed(str(exc)) from exc
    return _ours(kind, flags, amqtt_packet)


def _ours(kind: int, flags: int, p: Any) -> Packet:
    if kind == PUBLISH:
        return Publish(
            p.variable_header.topic_name,
            p.payload.data,
            (flags >> 1) & 3,
            bool(flags & 0x01),
            bool(flags & 0x08),
            p.variable_header.packet_id,
        )
    if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        return Ack(kind, p.variable_header.packet_id)
    if kind == SUBSCRIBE:
        return Subscribe(p.variable_header.packet_id, list(p.payload.topics))
    if kind == UNSUBSCRIBE:
        return Unsubscribe(p.variable_header.packet_id, list(p.payload.topics))
    if kind == CONNECT:
        vh, pl = p.variable_header, p.payload
        will = None
        if vh.will_flag:
            will = Will(pl.will_topic, bytes(pl.will_message), vh.will_qos, bool(vh.will_retain_flag))
        return Connect(
            vh.proto_name,
            vh.proto_level,
            "" if pl.client_id_is_random else pl.client_id,
            bool(vh.clean_session_flag),
            vh.keep_alive,
            pl.username if vh.username_flag else None,
            pl.password if vh.password_flag else None,
            will,
        )
    return Control(kind)


# --- writing ------------------------------------------------------------------------------------


def connack(session_present: bool, return_code: int) -> bytes:
    return ConnackPacket.build(int(session_present), return_code).to_bytes()


def publish(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int | None, dup: bool) -> bytes:
    return PublishPacket.build(topic, payload, packet_id, dup, qos, retain).to_bytes()


def suback(packet_id: int, return_codes: list[int]) -> bytes:
    return SubackPacket.build(packet_id, return_codes).to_bytes()


def unsuback(packet_id: int) -> bytes:
    return UnsubackPacket.build(packet_id).to_bytes()


def ack(kind: int, packet_id: int) -> bytes:
    cls = {PUBACK: PubackPacket, PUBREC: PubrecPacket, PUBREL: PubrelPacket, PUBCOMP: PubcompPacket}[kind]
    return cls.build(packet_id).to_bytes()


PINGRESP = PingRespPacket.build().to_bytes()
