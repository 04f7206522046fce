"""Test support: a real `gatehouse serve` process on free ports, and a real HTTP client for it."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.pg import FAST, Cluster

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Passw0rd!x"
USERS = {"admin@example.com": "gooee", "alice@example.com": "customer", "bob@example.com": "customer"}

# Which database the tests run on: GATEHOUSE_TEST_DB=sqlite (default) or postgres.
BACKEND = os.environ.get("GATEHOUSE_TEST_DB", "sqlite").strip().lower() or "sqlite"
if BACKEND not in ("sqlite", "postgres"):
    raise RuntimeError(f"GATEHOUSE_TEST_DB={BACKEND!r}: expected sqlite or postgres")

_cluster: Cluster | None = None


def cluster() -> Cluster:
    """This session's PostgreSQL cluster, started on first use (stopped by `stop_cluster`)."""
    global _cluster
    if _cluster is None:
        _cluster = Cluster(FAST).start()
    return _cluster


def stop_cluster() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


def new_database_url() -> str | None:
    """A fresh PostgreSQL database's URL; None on SQLite (a server then uses its data directory)."""
    return cluster().create_database() if BACKEND == "postgres" else None


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for port 0 may be taken
# again as the local end of an outgoing connection before the server binds it.
PORTS = range(20000, 32768)


def free_port() -> int:
    """A port no one listens on now, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def gatehouse(
    *args: str, data_dir: Path, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatehouse.cli", *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


@dataclass
class Server:
    """A running `gatehouse serve` process and where to reach it."""

    data_dir: Path
    env: dict[str, str]
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    mqtts_port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "certs" / "ca.crt"

    @property
    def database_url(self) -> str:
        return self.env.get("GATEHOUSE_DATABASE__URL") or f"sqlite://{self.data_dir / 'gatehouse.db'}"

    def start(self, timeout: float = 30, attempts: int = 3) -> None:
        """Start and wait for /health. A port taken meanwhile by someone else: new ports, again."""
        for attempt in range(attempts):
            try:
                return self._start(timeout)
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                self.http_port, self.https_port, self.mqtt_port, self.mqtts_port, self.ws_port = (
                    free_port() for _ in range(5)
                )

    def _start(self, timeout: float) -> None:
        self.log_path = self.data_dir / "server.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gatehouse.cli",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--http-port",
                str(self.http_port),
                "--https-port",
                str(self.https_port),
                "--mqtt-port",
                str(self.mqtt_port),
                "--mqtts-port",
                str(self.mqtts_port),
                "--ws-port",
                str(self.ws_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gatehouse serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gatehouse serve did not come up:\n{self.log()}")

    def stop(self, sig: int | None = None) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def mail_env(smtp_port: int, **extra: str) -> dict[str, str]:
    """Settings for a server that delivers mail to 127.0.0.1:`smtp_port`, retrying quickly."""
    return {
        "GATEHOUSE_MAIL__SMTP_HOST": "127.0.0.1",
        "GATEHOUSE_MAIL__SMTP_PORT": str(smtp_port),
        "GATEHOUSE_MAIL__FROM": "Gatehouse <noreply@gatehouse.test>",
        "GATEHOUSE_MAIL__RETRY_INITIAL_SECONDS": "0.2",
        "GATEHOUSE_MAIL__RETRY_MAX_SECONDS": "1",
        "GATEHOUSE_MAIL__POLL_SECONDS": "0.2",
        "GATEHOUSE_MAIL__TIMEOUT_SECONDS": "5",
        **extra,
    }


# The session's shared servers serve every test from 127.0.0.1: these flows' per-address budgets
# are off there (per-account budgets stay on); test_security.py and the flows' own limit tests
# run servers with the shipped budgets.
PER_ADDRESS_OFF = (
    "TWO_FACTOR",
    "PASSWORD_RESET",
    "ACTIVATION",
    "REGISTRATION",
    "ACCESSORY_LOGIN",
    "IOTLOCK_REGISTRATION",
)


def make_server(tmp: Path, **env: str) -> Server:
    """Create the users, then start a server with GATEHOUSE_* `env` set."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        "GATEHOUSE_AUTH__ACCESS_TOKEN_MINUTES": "30",
        # Every test logs in from 127.0.0.1 and the fuzzer fails hundreds of logins: no per-address
        # budget here. tests/integration/test_security.py runs servers with the shipped limits.
        "GATEHOUSE_LIMITS__LOGIN__PER_ADDRESS": "",
        **{f"GATEHOUSE_LIMITS__{flow}__PER_ADDRESS": "" for flow in PER_ADDRESS_OFF},
        **env,
    }
    if "GATEHOUSE_DATABASE__URL" not in env and (url := new_database_url()):
        env["GATEHOUSE_DATABASE__URL"] = url
    for username, kind in USERS.items():
        done = gatehouse(
            "users",
            "create",
            "--username",
            username,
            "--account-type",
            kind,
            "--password-stdin",
            data_dir=tmp,
            stdin=PASSWORD + "\n",
            env=env,
        )
        assert done.returncode == 0, done.stderr
    server = Server(tmp, env)
    server.start()
    return server


async def fetch(server: Server, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from a server's database (`?` placeholders), bypassing the server."""
    url = server.database_url
    if url.startswith("sqlite://"):
        conn = sqlite3.connect(f"file:{url.removeprefix('sqlite://')}?mode=ro", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    numbered = iter(range(1, sql.count("?") + 1))
    pg = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await pg.fetch(re.sub(r"\?", lambda _: f"${next(numbered)}", sql), *args)]
    finally:
        await pg.close()


async def table_names(server: Server) -> list[str]:
    """The tables of a server's database."""
    if server.database_url.startswith("sqlite://"):
        rows = await fetch(server, "SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await fetch(server, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return [r[0] for r in rows]


class Api:
    """A real HTTP client bound to one server, logged in as one user."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.token: str | None = None

    async def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        status, body = await self.call("POST", "/auth/login", {"username": username, "password": password})
        assert status == 200, body
        self.token = body["access_token"]
        return body

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | str | None = None,
        auth: bool = True,
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if auth and self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {self.token}"
        async with self.session.request(
            method, self.base + path, json=body if data is None else None, data=data, headers=hdrs
        ) as resp:
            text = await resp.text()
            try:
                parsed: Any = await resp.json(content_type=None) if text else None
            except ValueError:
                parsed = text
            self.last_headers = resp.headers
            return resp.status, parsed

    async def new_device(self, name: str = "meter", **extra: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/gateway/devices", {"name": name, "location": "Line A", **extra})
        assert status == 201, body
        return body

    async def provision(self, device_id: int, **extra: Any) -> str:
        status, body = await self.call("POST", f"/gateway/devices/{device_id}/provision", extra)
        assert status == 201, body
        return body["token"]

    async def claim(self, token: str, metadata: dict[str, Any] | None = None) -> tuple[int, Any]:
        return await self.call(
            "POST",
            "/gateway/devices/claim",
            {"token": token, "device_metadata": metadata or {"fw": "1.0.0"}},
            auth=False,
        )

    async def claimed_device(self, name: str = "meter") -> tuple[dict[str, Any], str]:
        """A new device with an API key: (device, api_key)."""
        device = await self.new_device(name)
        status, body = await self.claim(await self.provision(device["id"]))
        assert status == 200, body
        return device, body["api_key"]


async def new_user(server: Server, http: aiohttp.ClientSession, prefix: str = "user") -> Api:
    """A new active customer user of the test's own (made with the CLI), logged in; the Api carries
    its `username` and `user_id`."""
    username = f"{prefix}-{random.getrandbits(40):010x}@example.com"
    done = await asyncio.to_thread(
        gatehouse, "users", "create", "--username", username, "--account-type", "customer", "--password-stdin",
        data_dir=server.data_dir, env=server.env, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    user_id = re.search(r"\(([0-9a-f-]{36})\)", done.stdout)
    assert user_id, done.stdout
    api = Api(http, server.url)
    await api.login(username)
    api.username, api.user_id = username, user_id.group(1)  # type: ignore[attr-defined]
    return api


async def eventually(check: Any, timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Await `check()` until it returns something truthy, or fail with its last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
