"""Commands: cloud -> device on commands/req/<req_id>, answered exactly once on commands/res/<req_id>."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from handlers.accounts import Principal
from handlers.context import Context
from handlers.devices import owned_device
from handlers.effects import Effect, Publish
from handlers.envelope import Envelope
from handlers.errors import Conflict, Forbidden, Gone, NotFound
from handlers.views import Timestamp, View
from models.commands import Command

REQ_ID_MAX = Command._meta.fields_map["req_id"].max_length  # type: ignore[attr-defined]

MAX_WAIT = 30  # seconds an HTTP caller may hold the request open for the answer


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: dict[str, Any] = Field(description="JSON object published to the device as is")
    timeout: float = Field(0, ge=0, le=MAX_WAIT, description="seconds to wait for the answer; 0 answers 202 at once")
    expires_in: int = Field(3600, ge=1, le=30 * 86400, description="seconds after which an unanswered command expires")


class CommandResult(BaseModel):
    """What a device publishes on commands/res/<req_id>: a status plus anything it wants to report."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "error"]


class CommandQuery(BaseModel):
    limit: int = Field(50, ge=1, le=1000)


class CommandView(View):
    req_id: str
    device_id: int
    command: dict[str, Any]
    status: Literal["pending", "ok", "error", "expired"]
    result: dict[str, Any] | None = Field(description="the device's whole answer, once it answered")
    created_at: Timestamp
    expires_at: Timestamp
    answered_at: Timestamp | None


class CommandList(View):
    device_id: int
    count: int
    results: list[CommandView] = Field(description="newest first")


def request_topic(username: str, req_id: str) -> str:
    return f"devices/{username}/commands/req/{req_id}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def command_view(cmd: Command, now: datetime | None = None) -> dict[str, Any]:
    """The command as callers see it; a pending command past its expiry reads as "expired"."""
    expired = cmd.status == "pending" and cmd.expires_at <= (now or datetime.now(UTC))
    return {
        "req_id": cmd.req_id,
        "device_id": cmd.device_id,  # type: ignore[attr-defined]
        "command": cmd.payload,
        "status": "expired" if expired else cmd.status,
        "result": cmd.result,
        "created_at": _iso(cmd.created_at),
        "expires_at": _iso(cmd.expires_at),
        "answered_at": _iso(cmd.answered_at),
    }


async def send_command(ctx: Context, principal: Principal, device_id: int, req: CommandRequest) -> dict[str, Any]:
    """Store and publish a command (QoS 1); with a timeout, wait in-process for the device's answer."""
    device = await owned_device(principal, device_id, "change_device")
    now = datetime.now(UTC)
    cmd = await Command.create(
        req_id=secrets.token_urlsafe(9),
        device=device,
        payload=req.command,
        created_at=now,
        expires_at=now + timedelta(seconds=req.expires_in),
    )
    waiter: asyncio.Future[tuple[str, dict[str, Any], datetime]] | None = None
    if req.timeout > 0:  # registered before publishing, so even an instant answer finds it
        waiter = ctx.command_waiters[cmd.req_id] = asyncio.get_running_loop().create_future()
    try:
        await ctx.effector.apply([Publish.json(request_topic(device.username, cmd.req_id), req.command, qos=1)])
        if waiter is None:
            return command_view(cmd, now)
        with contextlib.suppress(TimeoutError):
            cmd.status, cmd.result, cmd.answered_at = await asyncio.wait_for(waiter, req.timeout)
            return command_view(cmd, now)
    finally:
        ctx.command_waiters.pop(cmd.req_id, None)
    # Timed out here; another worker may still have recorded the answer: the row decides.
    fresh = await Command.get_or_none(id=cmd.id)
    if fresh is None:
        raise NotFound(f"device {device_id} not found", code="device_not_found")
    return command_view(fresh)


def known_shape(req_id: str) -> bool:
    """Could be one of our ids: longer than the column, the ORM refuses to even look it up."""
    return len(req_id) <= REQ_ID_MAX


async def record_result(ctx: Context, env: Envelope, username: str, req_id: str, res: CommandResult) -> list[Effect]:
    """A device's answer: only to its own pending command, and only the first answer counts."""
    who = env.identity
    if who.kind != "device" or who.device_id is None or who.username != username:
        raise Forbidden("a device answers only on devices/<own username>/commands/res/<req_id>", code="not_a_device")
    if not known_shape(req_id):
        raise NotFound(f"no command {req_id[:40]} for this device", code="command_not_found")
    now = datetime.now(UTC)
    result = res.model_dump()
    # The conditional update is the lock: of racing answers exactly one still sees "pending".
    # Tried first (one query on the happy path); only a refusal looks up why.
    won = await Command.filter(req_id=req_id, device_id=who.device_id, status="pending", expires_at__gt=now).update(
        status=res.status, result=result, answered_at=now
    )
    if not won:
        # Another device's req_id reads as unknown: ids do not leak across devices.
        cmd = await Command.get_or_none(req_id=req_id, device_id=who.device_id)
        if cmd is None:
            raise NotFound(f"no command {req_id} for this device", code="command_not_found")
        if cmd.status != "pending":
            raise Conflict(f"command {req_id} was already answered", code="command_already_answered")
        raise Gone(f"command {req_id} expired at {cmd.expires_at.isoformat()}", code="command_expired")
    waiter = ctx.command_waiters.pop(req_id, None)
    if waiter is not None and not waiter.done():
        waiter.set_result((res.status, result, now))
    return []


async def get_command(principal: Principal, device_id: int, req_id: str) -> dict[str, Any]:
    device = await owned_device(principal, device_id)
    cmd = await Command.get_or_none(device_id=device.id, req_id=req_id) if known_shape(req_id) else None
    if cmd is None:
        raise NotFound(f"command {req_id} not found", code="command_not_found")
    return command_view(cmd)


async def list_commands(principal: Principal, device_id: int, q: CommandQuery) -> dict[str, Any]:
    """The device's commands, newest first."""
    device = await owned_device(principal, device_id)
    rows = await Command.filter(device_id=device.id).order_by("-id").limit(q.limit)
    now = datetime.now(UTC)
    return {"device_id": device.id, "count": len(rows), "results": [command_view(c, now) for c in rows]}
