"""Fan-out on its own: delivery QoS, one copy per subscriber, the ACL on receive, retained bounds."""

from __future__ import annotations

from broker.delivery import Outgoing
from broker.fanout import Fanout
from broker.session import Session
from broker.sessions import SessionStore
from handlers.envelope import Identity

ANON = Identity("anonymous")
A = Identity("device", "esp32-aa", 1)


def fanout(**kw: int) -> tuple[Fanout, list[str]]:
    overflows: list[str] = []
    f = Fanout(SessionStore(), max_queued=kw.pop("max_queued", 10), max_inflight=5, on_overflow=overflows.append, **kw)
    return f, overflows


def online(f: Fanout, client_id: str, identity: Identity = ANON) -> Session:
    session = Session(client_id, identity, persistent=False, connection=object())  # type: ignore[arg-type]
    f.register(session)
    return session


def queued(f: Fanout, client_id: str) -> list[tuple[str, int]]:
    return [(m.topic, m.qos) for m in f.outbox(client_id).queue]


async def test_delivery_at_the_lower_qos_and_one_copy_at_the_highest_grant() -> None:
    f, _ = fanout()
    online(f, "c1")
    f.subscribe("c1", "a/+", 0)
    f.subscribe("c1", "a/#", 2)
    assert f.publish("a/b", b"x", 1) == 1
    assert f.publish("a/b", b"x", None) == 1  # None: the subscription's own QoS
    assert queued(f, "c1") == [("a/b", 1), ("a/b", 2)]


async def test_the_receive_acl_keeps_reserved_roots_from_anonymous_wildcards() -> None:
    f, _ = fanout()
    online(f, "anon")
    f.subscribe("anon", "#", 1)
    assert f.publish("devices/esp32-aa/status", b"online", 1) == 0
    assert f.publish("lobby/x", b"hi", 1) == 1


async def test_only_reaches_one_client() -> None:
    f, _ = fanout()
    online(f, "c1")
    online(f, "c2")
    f.subscribe("c1", "t", 1)
    f.subscribe("c2", "t", 1)
    assert f.publish("t", b"x", 1, only="c2") == 1
    assert queued(f, "c1") == [] and queued(f, "c2") == [("t", 1)]


async def test_offline_clean_sessions_get_nothing_offline_persistent_only_qos1() -> None:
    f, _ = fanout()
    gone = Session("p", ANON, persistent=True)
    f.register(gone)
    f.subscribe("p", "t", 1)
    f.publish("t", b"0", 0)
    f.publish("t", b"1", 1)
    assert queued(f, "p") == [("t", 1)]


async def test_queue_bounded_in_bytes_too() -> None:
    f, overflows = fanout(max_queued_bytes=1000)
    online(f, "c1")
    f.subscribe("c1", "t", 1)
    assert f.publish("t", b"x" * 600, 0) == 1
    assert f.publish("t", b"x" * 600, 0) == 0  # QoS 0 over the byte bound: dropped
    assert f.publish("t", b"x" * 600, 1) == 0  # QoS 1: the owner is told (a slow subscriber)
    assert overflows == ["c1"]
    assert f.outbox("c1").bytes == 601


async def test_retained_bounded_per_device_in_count_and_bytes_and_cleared_with_it() -> None:
    f, _ = fanout(max_retained_per_device=2, max_retained_bytes_per_device=1000)
    assert f.retain("devices/esp32-aa/a", b"1", 1, bounded=True)
    assert f.retain("devices/esp32-aa/b", b"2", 1, bounded=True)
    assert not f.retain("devices/esp32-aa/c", b"3", 1, bounded=True)  # a third topic
    assert f.retain("devices/esp32-aa/a", b"replaced", 1, bounded=True)  # replacing is not adding
    assert not f.retain("devices/esp32-aa/b", b"x" * 1000, 1, bounded=True)  # bytes
    assert f.retain("devices/esp32-aa/status", b"online", 1)  # the broker's own: not counted
    assert f.retain("devices/esp32-aa/a", b"", 1, bounded=True)  # clearing always works
    assert f.retain("devices/esp32-bb/a", b"1", 1, bounded=True)  # another device's own bound
    assert sorted(f.retained) == ["devices/esp32-aa/b", "devices/esp32-aa/status", "devices/esp32-bb/a"]
    f.clear_retained("devices/esp32-aa/")
    assert sorted(f.retained) == ["devices/esp32-bb/a"]
    assert f.retained_bytes == len("devices/esp32-bb/a") + 1
    assert f.retain("devices/esp32-aa/a", b"1", 1, bounded=True)


async def test_nothing_retained_under_provisioning_from_a_client() -> None:
    f, _ = fanout()
    assert not f.retain("provisioning/p1/x", b"1", 1, bounded=True)
    assert f.retained == {}


async def test_retained_on_subscribe_at_the_lower_qos_and_within_the_acl() -> None:
    f, _ = fanout()
    online(f, "dev", A)
    f.retain("devices/esp32-aa/cfg", b"c", 2)
    f.retain("devices/esp32-bb/cfg", b"other", 2)
    f.send_retained("dev", "devices/esp32-aa/#", 1)
    box = f.outbox("dev")
    assert [(m.topic, m.qos, m.retain) for m in box.queue] == [("devices/esp32-aa/cfg", 1, True)]
    assert isinstance(box.queue[0], Outgoing)
