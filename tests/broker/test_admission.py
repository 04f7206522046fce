"""Admission on its own: a CONNECT in, a verdict out; nothing else is touched."""

from __future__ import annotations

import pytest

from broker.admission import ACCEPTED, BAD_CLIENT_ID, BAD_PROTOCOL, NOT_AUTHORIZED, Admission
from broker.codec import Connect, Will
from handlers.routes import ROUTES, Router
from tests.broker.memory import authenticate

ROUTER = Router(ROUTES)


def admission(*, anonymous: bool = False) -> Admission:
    return Admission(authenticate, allow_anonymous=anonymous, routed=lambda t: ROUTER.match(t) is not None)


def connect(
    client_id: str = "esp32-aa",
    username: str | None = "esp32-aa",
    password: str | None = "key-a",
    *,
    clean: bool = True,
    will: Will | None = None,
    level: int = 4,
) -> Connect:
    return Connect("MQTT", level, client_id, clean, 60, username, password, will)


async def code(c: Connect, *, anonymous: bool = False) -> int:
    return (await admission(anonymous=anonymous).admit(c, "test")).return_code


async def test_a_device_with_its_key() -> None:
    verdict = await admission().admit(connect(), "test")
    assert (verdict.return_code, verdict.client_id) == (ACCEPTED, "esp32-aa")
    assert verdict.identity is not None and verdict.identity.username == "esp32-aa"


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        (connect(password="wrong"), NOT_AUTHORIZED),
        (connect(password=""), NOT_AUTHORIZED),
        (connect(username="nobody"), NOT_AUTHORIZED),
        (connect(username=None, password=None), NOT_AUTHORIZED),  # anonymous refused by default
        (connect(level=5), BAD_PROTOCOL),
        (connect("", clean=False), BAD_CLIENT_ID),
        (connect("prov-1", "provision", "x", clean=False), NOT_AUTHORIZED),  # claims are never persistent
    ],
)
async def test_refused(c: Connect, expected: int) -> None:
    assert await code(c) == expected


@pytest.mark.parametrize(
    ("client_id", "expected"),
    [
        ("esp32-aa", ACCEPTED),
        ("esp32-aa-sim", ACCEPTED),
        ("esp32-aa-", ACCEPTED),
        ("esp32-bb", BAD_CLIENT_ID),  # another device's username
        ("esp32-esp32-bb", BAD_CLIENT_ID),  # the simulator's old scheme, squatting B
        ("esp32-aab", BAD_CLIENT_ID),
        ("x-esp32-aa", BAD_CLIENT_ID),
    ],
)
async def test_a_device_uses_only_client_ids_of_its_own(client_id: str, expected: int) -> None:
    assert await code(connect(client_id)) == expected


async def test_a_device_without_client_id_gets_one_of_its_own() -> None:
    verdict = await admission().admit(connect(""), "test")
    assert verdict.return_code == ACCEPTED and verdict.client_id.startswith("esp32-aa-")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("devices/esp32-aa/lastwill", ACCEPTED),
        ("devices/esp32-bb/lastwill", NOT_AUTHORIZED),  # another device's topic
        ("devices/esp32-aa/status", NOT_AUTHORIZED),  # presence is the broker's
        ("devices/esp32-aa/telemetry", NOT_AUTHORIZED),  # routed: would skip its handler
        ("devices/esp32-aa/+", NOT_AUTHORIZED),
        ("$SYS/x", NOT_AUTHORIZED),
    ],
)
async def test_will_topic(topic: str, expected: int) -> None:
    assert await code(connect(will=Will(topic, b"x", 1, True))) == expected


async def test_anonymous_only_when_allowed_and_outside_reserved_roots() -> None:
    anon = connect("a1", None, None, will=Will("lobby/x", b"x", 0, False))
    assert await code(anon, anonymous=True) == ACCEPTED
    assert await code(connect("a1", None, None, will=Will("devices/x/y", b"x", 0, False)), anonymous=True) == 5
