"""The session registry on its own: which session a CONNECT gets, take-over, expiry."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.fanout import Fanout
from broker.registry import SessionRegistry
from broker.sessions import SessionStore
from handlers.envelope import Identity

A = Identity("device", "esp32-aa", 1)
B = Identity("device", "esp32-bb", 2)


class Conn:
    """Stands for a Connection: the registry only compares it by identity."""


def registry(expiry: float = 60) -> SessionRegistry:
    store = SessionStore()  # not started: its operations just queue up
    fanout = Fanout(store, max_queued=10, max_inflight=5, on_overflow=lambda _: None)
    return SessionRegistry(fanout, store, expiry_seconds=expiry)


def opened(reg: SessionRegistry, conn: Any, client_id: str, identity: Identity, *, clean: bool) -> Any:
    return reg.open(conn, client_id, identity, clean=clean)


async def test_new_clean_session_ends_with_its_connection() -> None:
    reg, conn = registry(), Conn()
    session, present, displaced = opened(reg, conn, "esp32-aa", A, clean=True)
    assert (present, displaced, session.connection) == (False, None, conn)
    reg.fanout.subscribe("esp32-aa", "devices/esp32-aa/#", 1)
    reg.closed(session, conn)
    assert "esp32-aa" not in reg.sessions
    assert reg.fanout.subs.filters_of("esp32-aa") == {}


async def test_persistent_session_resumes_with_session_present() -> None:
    reg, first = registry(), Conn()
    session, _, _ = opened(reg, first, "esp32-aa", A, clean=False)
    reg.fanout.subscribe("esp32-aa", "devices/esp32-aa/#", 1)
    reg.closed(session, first)
    assert not session.connected and session.expiry is not None
    again, present, displaced = opened(reg, Conn(), "esp32-aa", A, clean=False)
    assert (again, present, displaced) == (session, True, None)
    assert session.expiry is None
    assert reg.fanout.subs.filters_of("esp32-aa") == {"devices/esp32-aa/#": 1}


async def test_take_over_returns_the_displaced_connection_whose_end_changes_nothing() -> None:
    reg, old, new = registry(), Conn(), Conn()
    session, _, _ = opened(reg, old, "esp32-aa", A, clean=False)
    resumed, present, displaced = opened(reg, new, "esp32-aa", A, clean=False)
    assert (resumed, present, displaced) == (session, True, old)
    reg.closed(session, old)  # the displaced connection ends afterwards
    assert session.connection is new and "esp32-aa" in reg.sessions


async def test_clean_connect_replaces_a_persistent_session() -> None:
    reg, old = registry(), Conn()
    session, _, _ = opened(reg, old, "esp32-aa", A, clean=False)
    reg.fanout.subscribe("esp32-aa", "devices/esp32-aa/x", 1)
    fresh, present, displaced = opened(reg, Conn(), "esp32-aa", A, clean=True)
    assert fresh is not session and (present, displaced) == (False, old)
    assert reg.fanout.subs.filters_of("esp32-aa") == {}
    reg.closed(session, old)
    assert reg.sessions["esp32-aa"] is fresh


async def test_a_client_id_belongs_to_the_identity_holding_its_session() -> None:
    reg = registry()
    session, _, _ = opened(reg, Conn(), "shared", A, clean=False)
    assert reg.held_by_another("shared", B)
    assert not reg.held_by_another("shared", A)
    assert not reg.held_by_another("other", B)
    reg.closed(session, session.connection)
    assert reg.held_by_another("shared", B)  # offline, it is still A's


async def test_the_more_specific_device_takes_a_client_id_both_own() -> None:
    # Device "esp32-aa" may use "esp32-aa-relay", so may device "esp32-aa-relay": the longer
    # username wins, and nothing of the squatter's session is handed over.
    reg, squat = registry(), Conn()
    short, long = Identity("device", "esp32-aa", 1), Identity("device", "esp32-aa-relay", 2)
    session, _, _ = opened(reg, squat, "esp32-aa-relay", short, clean=False)
    reg.fanout.subscribe("esp32-aa-relay", "devices/esp32-aa/#", 1)
    reg.closed(session, squat)
    assert not reg.held_by_another("esp32-aa-relay", long)
    mine, present, displaced = opened(reg, Conn(), "esp32-aa-relay", long, clean=False)
    assert mine is not session and (present, displaced, mine.identity) == (False, None, long)
    assert reg.fanout.subs.filters_of("esp32-aa-relay") == {}
    assert reg.held_by_another("esp32-aa-relay", short)  # and the squatter cannot take it back


async def test_an_offline_persistent_session_expires() -> None:
    reg, conn = registry(expiry=0), Conn()
    session, _, _ = opened(reg, conn, "esp32-aa", A, clean=False)
    reg.closed(session, conn)
    for _ in range(3):
        await asyncio.sleep(0)  # the expiry timer (0 s) runs on the next loop iterations
    assert "esp32-aa" not in reg.sessions
