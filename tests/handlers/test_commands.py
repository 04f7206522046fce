"""Commands against an in-memory database: publish, answer exactly once, wait for the answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers import accounts, commands, devices
from handlers.accounts import Principal
from handlers.commands import CommandQuery, CommandRequest
from handlers.context import Context
from handlers.devices import CreateDevice
from handlers.effects import Effect, Publish
from handlers.envelope import Envelope, Identity
from handlers.errors import Conflict, Forbidden, Gone, InvalidPayload, NotFound
from handlers.routes import ROUTES, Router, on_command_result
from handlers.telemetry_writer import TelemetryWriter
from models.commands import Command
from models.db import close_db, init_db

PASSWORD = "Passw0rd!x"


class RecordingEffector:
    def __init__(self) -> None:
        self.effects: list[Effect] = []
        self.applied = asyncio.Event()

    async def apply(self, effects: list[Effect]) -> None:
        self.effects.extend(effects)
        self.applied.set()

    async def published(self) -> Publish:
        """The first effect applied, once there is one."""
        await asyncio.wait_for(self.applied.wait(), 1)
        effect = self.effects[0]
        assert isinstance(effect, Publish)
        return effect


@pytest.fixture
async def ctx(db_url: str) -> AsyncIterator[Context]:
    db = await init_db(db_url)
    try:
        yield Context(jwt_secret="x" * 32, writer=TelemetryWriter(), effector=RecordingEffector())
    finally:
        await close_db(db)


def recorder(ctx: Context) -> RecordingEffector:
    assert isinstance(ctx.effector, RecordingEffector)
    return ctx.effector


async def _principal(username: str) -> Principal:
    user = await accounts.create_user(username, PASSWORD, "customer")
    return Principal(str(user.id), user.username, user.account_type)


@pytest.fixture
async def alice(ctx: Context) -> Principal:
    return await _principal("alice@example.com")


async def _device(owner: Principal, username: str) -> Identity:
    view = await devices.create_device(owner, CreateDevice(name="meter", username=username))
    return Identity("device", username, view["id"], owner.user_id)  # type: ignore[arg-type]


@pytest.fixture
async def dev(alice: Principal) -> Identity:
    return await _device(alice, "esp32-aa")


async def _send(ctx: Context, who: Principal, dev: Identity, **req: Any) -> dict[str, Any]:
    body = {"command": {"method": "setRelay", "params": {"on": True}}, **req}
    return await commands.send_command(ctx, who, dev.device_id, CommandRequest.model_validate(body))  # type: ignore[arg-type]


async def _answer(ctx: Context, dev: Identity, req_id: str, body: Any, *, topic_user: str = "") -> list[Effect]:
    user = topic_user or dev.username
    topic = f"devices/{user}/commands/res/{req_id}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await on_command_result(ctx, Envelope("mqtt", topic, dev, raw, qos=1), [user, req_id])


async def test_send_publishes_command_and_stores_it(ctx: Context, alice: Principal, dev: Identity) -> None:
    view = await _send(ctx, alice, dev)
    assert view["status"] == "pending" and view["result"] is None and view["answered_at"] is None
    assert view["command"] == {"method": "setRelay", "params": {"on": True}}
    assert recorder(ctx).effects == [
        Publish(f"devices/esp32-aa/commands/req/{view['req_id']}", b'{"method":"setRelay","params":{"on":true}}', 1)
    ]
    row = await Command.get(req_id=view["req_id"])
    assert (row.status, row.device_id, row.payload) == ("pending", dev.device_id, view["command"])  # type: ignore[attr-defined]
    assert row.expires_at - row.created_at == timedelta(seconds=3600)
    assert ctx.command_waiters == {}


async def test_answer_recorded(ctx: Context, alice: Principal, dev: Identity) -> None:
    view = await _send(ctx, alice, dev)
    assert await _answer(ctx, dev, view["req_id"], {"status": "ok", "relay": "on"}) == []
    got = await commands.get_command(alice, dev.device_id, view["req_id"])  # type: ignore[arg-type]
    assert got["status"] == "ok"
    assert got["result"] == {"status": "ok", "relay": "on"}
    assert got["answered_at"] is not None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{nope", "invalid_json"),
        ([1], "invalid_schema"),
        ({"status": "done"}, "invalid_schema"),
        ({}, "invalid_schema"),
    ],
)
async def test_bad_answers_refused(ctx: Context, alice: Principal, dev: Identity, body: Any, code: str) -> None:
    view = await _send(ctx, alice, dev)
    with pytest.raises(InvalidPayload) as err:
        await _answer(ctx, dev, view["req_id"], body)
    assert err.value.code == code
    assert (await Command.get(req_id=view["req_id"])).status == "pending"


async def test_other_device_and_unknown_refused(ctx: Context, alice: Principal, dev: Identity) -> None:
    other = await _device(alice, "esp32-bb")
    view = await _send(ctx, alice, dev)
    with pytest.raises(NotFound) as err:  # its own topic, someone else's req_id
        await _answer(ctx, other, view["req_id"], {"status": "ok"})
    assert err.value.code == "command_not_found"
    with pytest.raises(Forbidden):  # the other device's topic (the broker ACL stops this first)
        await _answer(ctx, other, view["req_id"], {"status": "ok"}, topic_user="esp32-aa")
    with pytest.raises(NotFound):
        await _answer(ctx, dev, "no-such-id", {"status": "ok"})
    assert (await Command.get(req_id=view["req_id"])).status == "pending"


async def test_req_id_longer_than_any_of_ours_is_not_found(ctx: Context, alice: Principal, dev: Identity) -> None:
    # Longer than the column: the ORM refused the lookup itself (a 500 on GET, a handler failure
    # and a disconnect without PUBACK on MQTT). It is simply no command of ours.
    long_id = "x" * (commands.REQ_ID_MAX + 1)
    with pytest.raises(NotFound) as err:
        await _answer(ctx, dev, long_id, {"status": "ok"})
    assert err.value.code == "command_not_found"
    with pytest.raises(NotFound):
        await commands.get_command(alice, dev.device_id, long_id)  # type: ignore[arg-type]


async def test_second_answer_refused(ctx: Context, alice: Principal, dev: Identity) -> None:
    view = await _send(ctx, alice, dev)
    await _answer(ctx, dev, view["req_id"], {"status": "error", "reason": "jammed"})
    with pytest.raises(Conflict) as err:
        await _answer(ctx, dev, view["req_id"], {"status": "ok"})
    assert err.value.code == "command_already_answered"
    row = await Command.get(req_id=view["req_id"])
    assert (row.status, row.result) == ("error", {"status": "error", "reason": "jammed"})


async def test_exactly_one_of_concurrent_answers_wins(ctx: Context, alice: Principal, dev: Identity) -> None:
    view = await _send(ctx, alice, dev)
    outcomes = await asyncio.gather(
        *(_answer(ctx, dev, view["req_id"], {"status": "ok", "n": i}) for i in range(8)), return_exceptions=True
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if o not in winners)
    row = await Command.get(req_id=view["req_id"])
    assert row.result == {"status": "ok", "n": outcomes.index(winners[0])}


async def test_waiter_resolved_by_answer(ctx: Context, alice: Principal, dev: Identity) -> None:
    task = asyncio.create_task(_send(ctx, alice, dev, timeout=5))
    sent = await recorder(ctx).published()
    req_id = sent.topic.rsplit("/", 1)[1]
    assert set(ctx.command_waiters) == {req_id}
    await _answer(ctx, dev, req_id, {"status": "ok", "value": 42})
    view = await asyncio.wait_for(task, 1)
    assert (view["req_id"], view["status"], view["result"]) == (req_id, "ok", {"status": "ok", "value": 42})
    assert ctx.command_waiters == {}


async def test_timeout_leaves_command_pending(ctx: Context, alice: Principal, dev: Identity) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    view = await _send(ctx, alice, dev, timeout=0.2)
    assert loop.time() - started >= 0.2
    assert view["status"] == "pending"
    assert ctx.command_waiters == {}
    # A late answer is still recorded.
    await _answer(ctx, dev, view["req_id"], {"status": "ok"})
    assert (await commands.get_command(alice, dev.device_id, view["req_id"]))["status"] == "ok"  # type: ignore[arg-type]


async def test_expired_command(ctx: Context, alice: Principal, dev: Identity) -> None:
    view = await _send(ctx, alice, dev, expires_in=60)
    await Command.filter(req_id=view["req_id"]).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert (await commands.get_command(alice, dev.device_id, view["req_id"]))["status"] == "expired"  # type: ignore[arg-type]
    with pytest.raises(Gone) as err:
        await _answer(ctx, dev, view["req_id"], {"status": "ok"})
    assert err.value.code == "command_expired"


async def test_get_and_list_owner_only(ctx: Context, alice: Principal, dev: Identity) -> None:
    bob = await _principal("bob@example.com")
    first = await _send(ctx, alice, dev)
    second = await _send(ctx, alice, dev)
    listed = await commands.list_commands(alice, dev.device_id, CommandQuery())  # type: ignore[arg-type]
    assert [c["req_id"] for c in listed["results"]] == [second["req_id"], first["req_id"]]
    listed = await commands.list_commands(alice, dev.device_id, CommandQuery(limit=1))  # type: ignore[arg-type]
    assert [c["req_id"] for c in listed["results"]] == [second["req_id"]]
    with pytest.raises(NotFound):
        await commands.get_command(bob, dev.device_id, first["req_id"])  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await _send(ctx, bob, dev)
    with pytest.raises(NotFound):
        await commands.get_command(alice, dev.device_id, "unknown")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [{}, {"command": [1]}, {"command": {}, "timeout": 31}, {"command": {}, "timeout": -1}, {"command": {}, "x": 1}],
)
def test_request_schema(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CommandRequest.model_validate(body)


def test_router_reaches_result_route() -> None:
    router = Router(ROUTES)
    found = router.match("devices/esp32-aa/commands/res/abc_-123")
    assert found is not None and found[0].handler is on_command_result
    assert found[1] == ["esp32-aa", "abc_-123"]
    assert router.match("devices/esp32-aa/commands/req/abc") is None
    assert router.match("devices/esp32-aa/other/res/abc") is None
    telemetry = router.match("devices/esp32-aa/telemetry")
    assert telemetry is not None and telemetry[1] == ["esp32-aa"]
