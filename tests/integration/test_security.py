"""The door against abuse (docs/security.md): login limits and lockout, equal cost for unknown users,
slow headers and bodies cut off, public URLs from configuration, forged-but-signed tokens refused.

The server here runs with the shipped login limits; it trusts one proxy hop, so each test plays its
own client address with X-Forwarded-For and the per-address budgets of one test do not touch another.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import pytest

from gatehouse.server import LINGERING_SECONDS
from tests.support import PASSWORD, Api, Server, gatehouse, make_server

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(
        tmp_path_factory.mktemp("gatehouse-strict"),
        GATEHOUSE_LIMITS__LOGIN__PER_ADDRESS="30 per 10 minutes",
        GATEHOUSE_LIMITS__LOGIN__PER_ACCOUNT="5 per 15 minutes",
        GATEHOUSE_LIMITS__LOCKOUT_SECONDS="900",
        GATEHOUSE_HTTP__HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        GATEHOUSE_HTTP__BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        GATEHOUSE_HTTP__TRUSTED_PROXY_HOPS="1",
        GATEHOUSE_HTTP__PUBLIC_URL="https://iot.example.com/",
    )
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


def new_user(server: Server, username: str) -> None:
    done = gatehouse(
        "users", "create", "--username", username, "--account-type", "customer", "--password-stdin",
        data_dir=server.data_dir, env=server.env, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def login(
    http: aiohttp.ClientSession, server: Server, username: str, password: str, address: str
) -> tuple[int, Any, Any]:
    async with http.post(
        f"{server.url}/auth/login",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    ) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_sixty_wrong_passwords_lock_the_account(strict: Server, http: aiohttp.ClientSession) -> None:
    new_user(strict, "mia@example.com")
    started = time.monotonic()
    answers = [await login(http, strict, "mia@example.com", f"Wrong{i}pass", "198.51.100.1") for i in range(60)]
    assert time.monotonic() - started < 30
    statuses = [status for status, _, _ in answers]
    assert statuses == [401] * 5 + [429] * 55, statuses
    status, body, headers = answers[-1]
    assert body["code"] == "account_locked" and set(body) == {"detail", "code", "errors"}
    assert 800 <= int(headers["Retry-After"]) <= 900
    # Locked means locked: the right password is refused too, from anywhere, until it expires.
    status, body, _ = await login(http, strict, "mia@example.com", PASSWORD, "198.51.100.99")
    assert (status, body["code"]) == (429, "account_locked")
    # Another account from the same address is not affected.
    status, body, _ = await login(http, strict, "alice@example.com", PASSWORD, "198.51.100.1")
    assert status == 200, body


async def test_unknown_accounts_are_limited_like_known_ones(strict: Server, http: aiohttp.ClientSession) -> None:
    statuses = [(await login(http, strict, "ghost@example.com", "Wrong1pass", "198.51.100.2"))[0] for _ in range(7)]
    assert statuses == [401] * 5 + [429] * 2


async def test_concurrent_guesses_get_no_further(strict: Server, http: aiohttp.ClientSession) -> None:
    new_user(strict, "noah@example.com")
    answers = await asyncio.gather(
        *(login(http, strict, "noah@example.com", f"Wrong{i}pass", "198.51.100.3") for i in range(60))
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses.count(401) <= 5 and statuses.count(429) >= 55 and set(statuses) == {401, 429}
    assert all(int(h["Retry-After"]) >= 1 for s, _, h in answers if s == 429)


async def test_one_address_is_limited_across_accounts(strict: Server, http: aiohttp.ClientSession) -> None:
    statuses = [
        (await login(http, strict, f"guess{i}@example.com", "Wrong1pass", "198.51.100.4"))[0] for i in range(32)
    ]
    assert statuses == [401] * 30 + [429] * 2
    status, body, headers = await login(http, strict, "admin@example.com", PASSWORD, "198.51.100.4")
    assert (status, body["code"]) == (429, "rate_limited") and 1 <= int(headers["Retry-After"]) <= 600
    status, _, _ = await login(http, strict, "admin@example.com", PASSWORD, "198.51.100.5")
    assert status == 200


async def test_failed_login_costs_the_same_for_unknown_users(strict: Server, http: aiohttp.ClientSession) -> None:
    """An unknown user is checked against a dummy argon2 hash: without it the answer came in
    milliseconds instead of the hash's ~100 ms, telling who has an account."""
    new_user(strict, "olivia@example.com")

    async def timed(username: str, address: str) -> float:
        started = time.perf_counter()
        status, _, _ = await login(http, strict, username, "Wrong1pass", address)
        assert status == 401
        return time.perf_counter() - started

    known = [await timed("olivia@example.com", "198.51.100.6") for _ in range(4)]
    unknown = [await timed(f"nobody{i}@example.com", "198.51.100.7") for i in range(4)]
    # Without the dummy hash an unknown user's answer takes a few ms against the hash's hundreds: a
    # factor of 4 still tells them apart, and leaves room for a busy 2-core machine (CI once saw
    # known logins of 0.19-0.52 s beside unknown ones of 0.20-0.25 s).
    assert min(unknown) >= 0.25 * min(known), (known, unknown)
    assert statistics.median(unknown) >= 0.25 * statistics.median(known), (known, unknown)


async def trickle_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes
) -> tuple[float, bytes]:
    """Send `trickle` one byte at a time, one every 0.2 s (the reads' timeout), until the server
    closes the connection; returns how long that took and what the server sent. Fails after 10 s."""
    started = time.monotonic()
    received = b""
    for byte in trickle:
        if time.monotonic() - started > 10:
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
            chunk = await asyncio.wait_for(reader.read(4096), timeout=0.2)
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - started, received
        if not chunk:
            return time.monotonic() - started, received
        received += chunk
    raise AssertionError(f"still open after {time.monotonic() - started:.1f}s; got {received[:200]!r}")


async def test_slow_headers_are_cut_off(strict: Server) -> None:
    """One byte of header every 0.2 s used to hold the connection forever."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.http_port)
    try:
        took, received = await trickle_until_closed(reader, writer, b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 200)
    finally:
        writer.close()
    assert HEADER_TIMEOUT * 0.9 <= took <= HEADER_TIMEOUT + 3, took
    assert received == b""  # no request was ever complete: nothing to answer


async def test_slow_body_is_answered_408_and_closed(strict: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.http_port)
    try:
        writer.write(b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 200\r\n\r\n")
        took, received = await trickle_until_closed(reader, writer, b'{"username": "' + b"a" * 150)
    finally:
        writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:300]
    assert json.loads(body)["code"] == "request_timeout"
    assert BODY_TIMEOUT * 0.9 <= took <= BODY_TIMEOUT + LINGERING_SECONDS + 3, took


async def test_public_urls_come_from_configuration_not_the_host_header(
    strict: Server, server: Server, http: aiohttp.ClientSession
) -> None:
    for srv, expected in ((strict, "https://iot.example.com"), (server, f"http://localhost:{server.http_port}")):
        api = Api(http, srv.url)
        await api.login("bob@example.com")
        device = await api.new_device("host-header")
        token = await api.provision(device["id"])
        status, body = await api.call(
            "POST", "/gateway/devices/claim", {"token": token, "device_metadata": {}},
            headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}, auth=False,
        )  # fmt: skip
        assert status == 200, body
        assert body["ingest_url"] == f"{expected}/gateway/device-data/ingest"


def forged(server: Server, **claims: Any) -> str:
    """A token signed with the server's own secret, with exactly these claims."""
    secret = (server.data_dir / "jwt.secret").read_text().strip()
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_signed_tokens_missing_claims_are_401(server: Server, admin: Api) -> None:
    me = (await admin.call("GET", "/me"))[1]
    now = datetime.now(UTC)
    later = now + timedelta(minutes=5)
    base = {"aud": "gatehouse", "typ": "access", "iat": now}
    cases = {
        "no sub": {**base, "exp": later},
        "no exp": {**base, "sub": me["id"]},
        "sub not a uuid": {**base, "exp": later, "sub": "admin"},
        "sub a number": {**base, "exp": later, "sub": 12},
        "unknown sub": {**base, "exp": later, "sub": str(uuid.uuid4())},
        "no typ": {"aud": "gatehouse", "exp": later, "sub": me["id"]},
    }
    for name, claims in cases.items():
        status, body = await admin.call("GET", "/me", headers={"Authorization": f"Bearer {forged(server, **claims)}"})
        assert status == 401, (name, status, body)
        assert set(body) == {"detail", "code", "errors"}, name
    good = forged(server, **base, exp=later, sub=me["id"])
    assert (await admin.call("GET", "/me", headers={"Authorization": f"Bearer {good}"}))[0] == 200
