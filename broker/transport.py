"""Listeners and byte streams: TCP and TLS (asyncio), WebSocket (the `websockets` package).

A connection reads and writes through a `Stream`, whatever carries it. Every close is bounded:
a peer that stopped reading cannot hold a close (or the shutdown) for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)


class Stream(Protocol):
    peer: str

    async def readexactly(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...

    def abort(self) -> None: ...


Serve = Callable[[Stream], Awaitable[None]]


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "?"


class TcpStream:
    __slots__ = ("_reader", "_writer", "peer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.peer = _peer(writer.get_extra_info("peername"))

    async def readexactly(self, n: int) -> bytes:
        return await self._reader.readexactly(n)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    async def close(self) -> None:
        # A graceful close flushes what is buffered; bounded, else the socket is dropped.
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        except (OSError, TimeoutError, asyncio.CancelledError):
            self.abort()

    def abort(self) -> None:
        self._writer.transport.abort()


class WsStream:
    """MQTT over WebSocket: binary messages carry the byte stream, in any split [MQTT-6.0.0]."""

    __slots__ = ("_buffer", "_pending", "_ws", "peer")

    def __init__(self, ws: ServerConnection) -> None:
        self._ws = ws
        self._buffer = bytearray()
        self._pending: list[bytes] = []
        self.peer = _peer(ws.remote_address)

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            try:
                message = await self._ws.recv()
            except ConnectionClosed:
                raise asyncio.IncompleteReadError(bytes(self._buffer), n) from None
            self._buffer += message.encode() if isinstance(message, str) else message
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    def write(self, data: bytes) -> None:
        self._pending.append(data)

    async def drain(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise ConnectionResetError(str(exc)) from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 1.0)
        self.abort()

    def abort(self) -> None:
        self._ws.transport.abort()


async def listen_tcp(host: str, port: int, serve: Serve, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve(TcpStream(reader, writer))

    # A TLS handshake that never completes is bounded by asyncio's ssl_handshake_timeout (60 s).
    return await asyncio.start_server(accepted, host, port, ssl=tls, reuse_address=True, backlog=4096)


async def listen_ws(host: str, port: int, serve: Serve) -> websockets.asyncio.server.Server:
    async def accepted(ws: ServerConnection) -> None:
        await serve(WsStream(ws))

    return await websockets.serve(accepted, host, port, subprotocols=[websockets.Subprotocol("mqtt")])


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
