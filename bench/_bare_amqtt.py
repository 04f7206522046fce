"""A bare amqtt broker for baselines: one TCP listener, anonymous auth only, no $SYS/loggers.

Run: python bench/_bare_amqtt.py [port]   (port 0/absent = pick a free loopback port)
Set BENCH_NO_UVLOOP=1 to run on the stock asyncio loop.
Prints `READY <port>` on stdout once it accepts connections, then serves until killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

from amqtt.broker import Broker


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def bare_config(port: int, host: str = "127.0.0.1") -> dict:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        # An explicit plugin dict replaces amqtt's defaults (event/packet loggers, $SYS).
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve(port: int) -> None:
    broker = Broker(bare_config(port))
    await broker.start()
    print(f"READY {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    port = int(sys.argv[1]) if len(sys.argv) > 1 and int(sys.argv[1]) else free_port()
    try:
        if os.environ.get("BENCH_NO_UVLOOP"):
            raise ImportError("uvloop disabled by BENCH_NO_UVLOOP")
        import uvloop
    except ImportError:
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))


if __name__ == "__main__":
    main()
