"""IoTLock commands and what gateways publish (docs/iotlock.md): a command is stored, published at
QoS 1 on its channel's req topic, delivered (the gateway's PUBACK), answered once (acknowledged or
failed) or expired; gateways also report events. Both end in the mailbox's history."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from tortoise.transactions import in_transaction

from handlers.context import Context
from handlers.effects import DisconnectDevice, Effect, Publish, Withdraw
from handlers.envelope import Envelope
from handlers.errors import Conflict, Forbidden, Gone, InvalidPayload, NotFound
from handlers.senml import decode_pack, encode_pack
from handlers.views import Timestamp, View
from models.devices import Device
from models.iotlock import OPEN_STATUSES, LockCommand, LockGateway, LockHistory, Mailbox

log = logging.getLogger(__name__)

MAX_WAIT = 30
ID_MAX = LockCommand._meta.fields_map["id"].max_length  # type: ignore[attr-defined]
EVENTS = ("UNLOCKED", "PIN_REJECTED", "TAMPER", "BATTERY")
UNLOCKED_HOW = ("pin", "app")
FINAL = ("acknowledged", "failed", "expired")
REMOVAL_DELAY = 1.0  # seconds between a DESTRUCT's answer (and its PUBACK) and the end of the gateway's login


class SendOptions(BaseModel):
    """`?wait=&expires_in=` on every route that sends a command."""

    wait: float = Field(0, ge=0, le=MAX_WAIT, description="seconds to wait for the outcome before answering")
    expires_in: int | None = Field(
        None,
        ge=1,
        le=30 * 86400,
        description="seconds the gateway has to answer (default iotlock.command_expiry_seconds)",
    )


class WaitQuery(BaseModel):
    wait: float = Field(0, ge=0, le=MAX_WAIT, description="seconds to wait for the outcome before answering")


class CommandView(View):
    id: str
    action: str
    status: Literal["pending", "delivered", "acknowledged", "failed", "expired"]
    gateway_id: str
    mailbox_id: str | None
    pin_id: str | None
    channel_id: str
    pack: list[dict[str, Any]] = Field(description="the pack sent (a PIN's value left out)")
    answer: list[dict[str, Any]] | None = Field(description="the gateway's answer pack, as it sent it")
    reason: str | None = Field(description="why it failed, when the gateway said")
    created_at: Timestamp
    delivered_at: Timestamp | None
    answered_at: Timestamp | None
    expires_at: Timestamp


def req_topic(channel_id: str, command_id: str) -> str:
    return f"channels/{channel_id}/messages/req/{command_id}"


def req_filter(channel_id: str) -> str:
    return f"channels/{channel_id}/messages/req/+"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def command_view(cmd: LockCommand, now: datetime | None = None) -> dict[str, Any]:
    expired = cmd.status in OPEN_STATUSES and cmd.expires_at <= (now or datetime.now(UTC))
    return {
        "id": cmd.id,
        "action": cmd.action,
        "status": "expired" if expired else cmd.status,
        "gateway_id": str(cmd.gateway_id),  # type: ignore[attr-defined]
        "mailbox_id": str(cmd.mailbox_id) if cmd.mailbox_id else None,  # type: ignore[attr-defined]
        "pin_id": str(cmd.pin_id) if cmd.pin_id else None,
        "channel_id": cmd.channel_id,
        "pack": cmd.pack,
        "answer": cmd.answer,
        "reason": cmd.reason,
        "created_at": _iso(cmd.created_at),
        "delivered_at": _iso(cmd.delivered_at),
        "answered_at": _iso(cmd.answered_at),
        "expires_at": _iso(cmd.expires_at),
    }


def _redacted(pack: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not (r.get("u") == "PIN" and k == "v")} for r in pack]


async def create_command(
    ctx: Context,
    gateway: LockGateway,
    channel_id: str,
    pack: list[dict[str, Any]],
    *,
    mailbox: Mailbox | None = None,
    pin_id: Any = None,
    expires_in: float | None = None,
) -> tuple[LockCommand, Publish]:
    """Store a command (and its history entry) and return the publish that sends it. Call inside the
    transaction that makes the change it carries; apply the publish after it commits."""
    now = datetime.now(UTC)
    action = pack[0]["n"]
    cmd = await LockCommand.create(
        id=secrets.token_urlsafe(9),
        account_id=gateway.account_id,  # type: ignore[attr-defined]
        gateway=gateway,
        mailbox=mailbox,
        pin_id=pin_id,
        channel_id=channel_id,
        action=action,
        pack=_redacted(pack),
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in or ctx.iotlock.command_expiry_seconds),
    )
    if mailbox is not None:
        await LockHistory.create(
            gateway=gateway, mailbox=mailbox, at=now, kind="command", name=action, command_id=cmd.id, status="pending"
        )
    return cmd, Publish.json(req_topic(channel_id, cmd.id), encode_pack(pack), qos=1)


async def outcome(ctx: Context, command_id: str, wait: float) -> dict[str, Any]:
    """The command as it stands, after waiting up to `wait` seconds for an outcome. The signal is
    in-process; a short re-read covers an answer recorded by another worker."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    signal = ctx.signal(f"iotlock:{command_id}")
    while True:
        cmd = await LockCommand.get(id=command_id)
        view = command_view(cmd)
        left = deadline - loop.time()
        if view["status"] in FINAL or left <= 0:
            return view
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                signal.wait(), min(left, 1.0, max(0.05, (cmd.expires_at - datetime.now(UTC)).total_seconds()))
            )


def _settled(ctx: Context, command_id: str) -> None:
    event = ctx.signals.get(f"iotlock:{command_id}")
    if event is not None:
        event.set()


async def _finish_removal(gateway_id: Any) -> list[Effect]:
    """A removed gateway answered DESTRUCT (or it expired): its thing and login go; the record stays."""
    gateway = await LockGateway.get(id=gateway_id)
    if gateway.device_id is None:  # type: ignore[attr-defined]
        return []
    await Device.filter(id=gateway.device_id).delete()  # type: ignore[attr-defined]
    return [DisconnectDevice(gateway.thing_id, "gateway removed", forget=True)]


# --- what gateways publish ---------------------------------------------------------------------


def _named(name: str, wanted: str) -> bool:
    return name == wanted or name.endswith("_" + wanted)


async def record_answer(ctx: Context, env: Envelope, channel_id: str, command_id: str) -> list[Effect]:
    """`channels/<cid>/messages/res/<command_id>`: the first answer of the command's gateway wins."""
    who = env.identity
    if who.kind != "device" or channel_id not in who.channels:
        raise Forbidden("a gateway answers only on its own channels", code="not_a_gateway")
    records = decode_pack(env.json(), now=time.time())
    cmd = await LockCommand.get_or_none(id=command_id, channel_id=channel_id) if len(command_id) <= ID_MAX else None
    if cmd is None:
        raise NotFound(f"no command {command_id[:40]} on this channel", code="command_not_found")
    first, status = records[0], records[0].get("vs")
    if not _named(first["n"], cmd.action) or status not in ("ok", "error"):
        raise InvalidPayload(
            f'the answer to {cmd.action} is [{{"n": "{cmd.action}", "vs": "ok" | "error"}}, ...]', code="invalid_answer"
        )
    reason = next((str(r.get("vs", r.get("v", "")))[:500] for r in records[1:] if _named(r["n"], "reason")), None)
    final = "acknowledged" if status == "ok" else "failed"
    now = datetime.now(UTC)
    async with in_transaction():
        won = await LockCommand.filter(id=cmd.id, status__in=OPEN_STATUSES, expires_at__gt=now).update(
            status=final, answer=env.json(), reason=reason, answered_at=now
        )
        if won:
            await LockCommand.filter(id=cmd.id, delivered_at=None).update(delivered_at=now)  # PUBACK not seen yet
            if cmd.mailbox_id is not None:  # type: ignore[attr-defined]
                await LockHistory.create(
                    gateway_id=cmd.gateway_id,  # type: ignore[attr-defined]
                    mailbox_id=cmd.mailbox_id,  # type: ignore[attr-defined]
                    at=now, kind="outcome", name=cmd.action, command_id=cmd.id, status=final,
                    detail={"reason": reason} if reason else {},
                )  # fmt: skip
    if not won:
        fresh = await LockCommand.get(id=cmd.id)
        if fresh.status in OPEN_STATUSES or fresh.status == "expired":
            raise Gone(f"command {cmd.id} expired at {fresh.expires_at.isoformat()}", code="command_expired")
        raise Conflict(f"command {cmd.id} was already answered", code="command_already_answered")
    _settled(ctx, cmd.id)
    if cmd.action == "DESTRUCT":  # after this answer's PUBACK: the removal closes this connection
        task = asyncio.get_running_loop().create_task(_remove_later(ctx, cmd.gateway_id))  # type: ignore[attr-defined]
        ctx.jobs.add(task)
        task.add_done_callback(ctx.jobs.discard)
    return []


async def _remove_later(ctx: Context, gateway_id: Any) -> None:
    await asyncio.sleep(REMOVAL_DELAY)
    await ctx.effector.apply(await _finish_removal(gateway_id))


def _event(index: int, record: dict[str, Any], now: float) -> tuple[str, dict[str, Any], datetime]:
    name = next((e for e in EVENTS if _named(record["n"], e)), None)
    if name is None:
        raise InvalidPayload(
            f"record {index}: unknown event {record['n'][:60]!r} (one of {', '.join(EVENTS)})", code="invalid_event"
        )
    if name == "UNLOCKED" and record.get("vs") not in UNLOCKED_HOW:
        raise InvalidPayload(f'record {index}: UNLOCKED needs "vs": "pin" or "app"', code="invalid_event")
    if name in ("PIN_REJECTED", "TAMPER") and "vb" not in record:
        raise InvalidPayload(f'record {index}: {name} needs "vb": true', code="invalid_event")
    if name == "BATTERY" and not (isinstance(record.get("v"), int | float) and 0 <= record["v"] <= 100):
        raise InvalidPayload(f'record {index}: BATTERY needs "v" from 0 to 100 (percent)', code="invalid_event")
    if not 0 <= record["t"] <= now + 86400:
        raise InvalidPayload(f"record {index}: time {record['t']} is not a time of this world", code="invalid_event")
    value = {"UNLOCKED": "vs", "BATTERY": "v"}.get(name, "vb")
    return name, {"value": record[value]}, datetime.fromtimestamp(record["t"], UTC)


async def record_events(ctx: Context, env: Envelope, channel_id: str) -> list[Effect]:
    """`channels/<cid>/messages/res/events`: every record checked before any is stored."""
    who = env.identity
    if who.kind != "device" or channel_id not in who.channels:
        raise Forbidden("a gateway reports only on its own channels", code="not_a_gateway")
    now = time.time()
    events = [_event(i, r, now) for i, r in enumerate(decode_pack(env.json(), now=now))]
    mailbox = await Mailbox.get_or_none(channel_id=channel_id)
    gateway = await LockGateway.get_or_none(id=mailbox.gateway_id) if mailbox else None  # type: ignore[attr-defined]
    gateway = gateway or await LockGateway.get_or_none(channel_id=channel_id)
    if gateway is None or gateway.device_id != who.device_id:  # type: ignore[attr-defined]
        raise NotFound(f"channel {channel_id} is not this gateway's", code="channel_not_found")
    await LockHistory.bulk_create(
        [
            LockHistory(gateway=gateway, mailbox=mailbox, at=at, kind="event", name=name, detail=detail)
            for name, detail, at in events
        ]
    )
    return []


async def delivered(topic: str) -> None:
    """The gateway acknowledged (PUBACK) a command published on `topic`."""
    levels = topic.split("/")
    if len(levels) != 5 or levels[2:4] != ["messages", "req"] or len(levels[4]) > ID_MAX:
        return
    now = datetime.now(UTC)
    await LockCommand.filter(id=levels[4], channel_id=levels[1], status="pending").update(
        status="delivered", delivered_at=now
    )


async def sweep(ctx: Context) -> int:
    """Expire the open commands past their time: recorded, taken out of the gateway's queue if never
    sent, a removal finished. Returns how many expired."""
    now = datetime.now(UTC)
    due = await LockCommand.filter(status__in=OPEN_STATUSES, expires_at__lte=now).limit(500)
    effects: list[Effect] = []
    for cmd in due:
        async with in_transaction():
            won = await LockCommand.filter(id=cmd.id, status__in=OPEN_STATUSES).update(status="expired")
            if won and cmd.mailbox_id is not None:  # type: ignore[attr-defined]
                await LockHistory.create(
                    gateway_id=cmd.gateway_id,  # type: ignore[attr-defined]
                    mailbox_id=cmd.mailbox_id,  # type: ignore[attr-defined]
                    at=now, kind="outcome", name=cmd.action, command_id=cmd.id, status="expired",
                )  # fmt: skip
        if not won:
            continue
        gateway = await LockGateway.get(id=cmd.gateway_id)  # type: ignore[attr-defined]
        effects.append(Withdraw(gateway.thing_id, req_topic(cmd.channel_id, cmd.id)))
        if cmd.action == "DESTRUCT":
            effects += await _finish_removal(gateway.id)
        _settled(ctx, cmd.id)
    await ctx.effector.apply(effects)
    return len(due)


async def sweep_forever(ctx: Context) -> None:
    while True:
        try:
            await sweep(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("iotlock: expiring commands failed (tried again in %ss)", ctx.iotlock.sweep_seconds)
        await asyncio.sleep(ctx.iotlock.sweep_seconds)
