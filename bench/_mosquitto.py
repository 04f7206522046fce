"""Mosquitto as a reference broker for bench.baseline: find (or install) it, start it on a free port.

The broker gets a generated config: one plain listener on 127.0.0.1, anonymous access, no
persistence, and queue/in-flight limits high enough that a single QoS 1 subscriber taking the
whole fleet's traffic never has messages dropped by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")
CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 10000000
max_inflight_messages 1000
log_dest stderr
log_type error
log_type warning
"""


class MosquittoUnavailable(RuntimeError):
    """Mosquitto is not installed and could not be installed."""


def find_mosquitto() -> str | None:
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("mosquitto")


def ensure_mosquitto(*, install: bool = True) -> str:
    """The mosquitto binary; installs the Debian package first when missing and running as root."""
    if (path := find_mosquitto()) is not None:
        return path
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MosquittoUnavailable(
            "mosquitto is not installed: run `apt-get install -y mosquitto` (as root) to add the Mosquitto baseline"
        )
    print("mosquitto missing: apt-get install -y mosquitto", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "mosquitto"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired as exc:
        raise MosquittoUnavailable("apt-get install mosquitto timed out after 300 s") from exc
    if done.returncode != 0 or (path := find_mosquitto()) is None:
        raise MosquittoUnavailable(f"apt-get install mosquitto failed (rc {done.returncode}): {done.stderr[-500:]}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_mosquitto(*, install: bool = True, timeout: float = 10) -> tuple[asyncio.subprocess.Process, int]:
    """Start mosquitto on a free loopback port; returns (process, port). The caller kills it."""
    binary = await asyncio.to_thread(ensure_mosquitto, install=install)
    port = _free_port()
    conf_dir = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
    conf = conf_dir / "mosquitto.conf"
    conf.write_text(CONFIG.format(port=port))
    proc = await asyncio.create_subprocess_exec(
        binary, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if proc.returncode is not None:
                err = await proc.stderr.read() if proc.stderr else b""
                raise RuntimeError(f"mosquitto exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"mosquitto did not listen on port {port} within {timeout} s") from None
                await asyncio.sleep(0.05)
            else:
                writer.close()
                return proc, port
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    finally:
        shutil.rmtree(conf_dir, ignore_errors=True)
