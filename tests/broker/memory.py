"""An in-memory client socket and a broker without listeners, for the broker's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broker import codec
from broker.server import Broker, Limits
from handlers.context import Context
from handlers.envelope import Identity
from handlers.telemetry_writer import TelemetryWriter
from tests.raw import CONNACK, PUBLISH, Packet, Publish, connect_packet, parse_publish

DEVICES = {
    ("esp32-aa", "key-a"): Identity("device", "esp32-aa", 1),
    ("esp32-bb", "key-b"): Identity("device", "esp32-bb", 2),
}


async def authenticate(username: str, password: str) -> Identity | None:
    return DEVICES.get((username, password))


class Pipe:
    """The broker reads what the test `send`s, and the test reads back what the broker writes."""

    def __init__(self) -> None:
        self.to_broker = asyncio.StreamReader()
        self.to_client = asyncio.StreamReader()
        self.peer = "memory:1"
        self.closed = False
        self.inbox: list[Packet] = []  # read while waiting for another kind of packet

    # the broker's side (broker.transport.Stream)
    async def readexactly(self, n: int) -> bytes:
        return await self.to_broker.readexactly(n)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.to_client.feed_data(data)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("closed")

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.to_client.feed_eof()
            self.to_broker.feed_eof()

    # the client's side
    def send(self, data: bytes) -> None:
        self.to_broker.feed_data(data)

    async def read(self) -> Packet | None:
        """The next packet the broker wrote; None once it closed the connection."""
        frame = await codec.read_frame(self.to_client, 1 << 24)
        return None if frame is None else Packet(*frame)

    async def expect(self, kind: int) -> Packet:
        """The first packet of `kind` (others read on the way wait in `inbox`)."""
        for i, packet in enumerate(self.inbox):
            if packet.kind == kind:
                return self.inbox.pop(i)
        while True:
            packet = await self.read()
            assert packet is not None, f"closed while waiting for packet type {kind}"
            if packet.kind == kind:
                return packet
            self.inbox.append(packet)

    async def next_publish(self) -> Publish:
        return parse_publish(await self.expect(PUBLISH))

    def unread_publishes(self) -> list[Publish]:
        return [parse_publish(p) for p in self.inbox if p.kind == PUBLISH]

    async def ends(self) -> list[Packet]:
        """Everything the broker writes until it closes the connection."""
        got = []
        while (packet := await self.read()) is not None:
            got.append(packet)
        return got


class Harness:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.tasks: list[asyncio.Task[None]] = []

    def open(self) -> Pipe:
        pipe = Pipe()
        self.tasks.append(asyncio.get_running_loop().create_task(self.broker.serve(pipe)))
        return pipe

    async def connect(self, client_id: str, **kw: object) -> tuple[Pipe, int, int]:
        """A connection that sent its CONNECT: (pipe, session present, return code)."""
        pipe = self.open()
        pipe.send(connect_packet(client_id, **kw))  # type: ignore[arg-type]
        connack = await pipe.expect(CONNACK)
        return pipe, connack.body[0], connack.body[1]

    async def connected(self, client_id: str, **kw: object) -> Pipe:
        pipe, _, code = await self.connect(client_id, **kw)
        assert code == 0
        return pipe


@asynccontextmanager
async def running(limits: Limits = Limits(), *, anonymous: bool = True) -> AsyncIterator[Harness]:
    """A broker without listeners or database: connections are served over `Pipe`s."""
    ctx = Context(jwt_secret="x" * 32, writer=TelemetryWriter())
    broker = Broker(ctx, [], limits, allow_anonymous=anonymous, authenticate=authenticate)
    harness = Harness(broker)
    try:
        yield harness
    finally:
        for task in harness.tasks:
            task.cancel()
        await asyncio.gather(*harness.tasks, return_exceptions=True)
