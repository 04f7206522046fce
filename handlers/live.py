"""Live updates for the console: what changed in the caller's scope since the last look.

A `Watch` compares the caller's devices (and, watching one device, its latest commands) with what it
told the page the last time and returns the differences as events. The `Hub` reads the devices seen
lately once a second for every stream of the process, so an open page costs little between the
re-reads of its whole scope. The REST adapter sends them as
server-sent events (GET /console/events). It reads the database, so it answers the same whichever
worker the browser reached (docs/console.md), and it sees exactly what `devices_seen_by` lets the
caller see: a user of another tenant gets nothing of this one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from handlers.commands import command_view
from handlers.devices import DeviceView, device_view, owned_device
from handlers.principal import Principal
from handlers.tenancy import devices_seen_by
from handlers.views import Timestamp, View
from models.commands import Command
from models.devices import Device

MAX_DEVICES = 500  # devices one stream follows (the first by id); a larger fleet: the REST list
COMMANDS = 20  # latest commands followed on a device page


class LiveQuery(BaseModel):
    device: int | None = Field(
        None, ge=1, le=2**31 - 1, description="follow one device: its state and its latest commands"
    )


class LiveDevice(DeviceView):
    last_payload: Any = Field(description="the last sample (null before the first one)")
    last_payload_at: Timestamp | None


class LiveEvent(View):
    """One server-sent event: `event:` is the kind, `data:` its JSON."""

    event: Literal["device", "removed", "command", "end"] = Field(
        description="device: a LiveDevice that is new or changed; removed: {id} gone from scope; "
        "command: a CommandView (device streams); end: {code}, the token expired or the user was deactivated"
    )
    data: dict[str, Any]


def live_view(device: Device) -> dict[str, Any]:
    return {
        **device_view(device),
        "last_payload": device.last_payload,
        "last_payload_at": device.last_payload_at.isoformat() if device.last_payload_at else None,
    }


# What a page is told again when it changes (metadata changes only with the key, at a claim).
STATE = ("name", "location", "online", "last_seen", "last_payload_at", "api_key_hash", "api_key_created_at")
RESYNC_SECONDS = 5.0  # how often a stream re-reads its whole scope (new, removed, claimed, revoked)
SLACK = timedelta(seconds=5)  # rows last seen this recently are looked at again (commit lag)


class Hub:
    """The devices seen lately, read once a second for every stream of this process: a device
    connects, disconnects or sends, and its `last_seen` moves."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.read_at = -1e9
        self.recent: dict[int, tuple[Any, ...]] = {}
        self.lock = asyncio.Lock()

    async def changes(self) -> dict[int, tuple[Any, ...]]:
        async with self.lock:
            if time.monotonic() - self.read_at >= self.interval * 0.9:
                since = datetime.now(UTC) - SLACK
                rows = await Device.filter(last_seen__gte=since).values_list("id", *STATE)
                self.recent = {row[0]: tuple(row[1:]) for row in rows}
                self.read_at = time.monotonic()
            return self.recent


class Watch:
    """What one open page has been told so far."""

    def __init__(self, device_id: int | None) -> None:
        self.device_id = device_id
        self.devices: dict[int, tuple[Any, ...]] = {}
        self.commands: dict[str, tuple[Any, ...]] = {}
        self.synced_at = -1e9

    @classmethod
    async def start(cls, principal: Principal, device_id: int | None) -> Watch:
        """404 `device_not_found` for a device outside the caller's scope, before anything is sent."""
        if device_id is not None:
            await owned_device(principal, device_id)
        return cls(device_id)

    async def _scope(self, principal: Principal) -> dict[int, tuple[Any, ...]]:
        query = Device.filter(devices_seen_by(principal))
        if self.device_id is not None:
            query = query.filter(id=self.device_id)
        rows = await query.order_by("id").limit(MAX_DEVICES).values_list("id", *STATE)
        return {row[0]: tuple(row[1:]) for row in rows}

    async def changes(self, principal: Principal, hub: Hub) -> list[tuple[str, dict[str, Any]]]:
        """The events since the last call (the first call: everything in scope). Every
        RESYNC_SECONDS the caller's whole scope is read again (`devices_seen_by`, as every device
        route); in between, only the hub's recent rows of devices already in it."""
        if time.monotonic() - self.synced_at >= RESYNC_SECONDS:
            now = await self._scope(principal)
            self.synced_at = time.monotonic()
        else:
            recent = await hub.changes()
            now = {**self.devices, **{i: state for i, state in recent.items() if i in self.devices}}
        changed = [i for i, state in now.items() if self.devices.get(i) != state]
        events: list[tuple[str, dict[str, Any]]] = []
        if changed:
            # Read through the scope again: a device that left it since the last re-read is gone.
            rows = await Device.filter(devices_seen_by(principal), id__in=changed).order_by("id")
            events += [("device", live_view(d)) for d in rows]
            for lost in set(changed) - {d.id for d in rows}:
                del now[lost]
        events += [("removed", {"id": gone}) for gone in sorted(self.devices.keys() - now.keys())]
        self.devices = now
        if self.device_id is not None and self.device_id in now:
            events += await self._commands()
        return events

    async def _commands(self) -> list[tuple[str, dict[str, Any]]]:
        latest = await Command.filter(device_id=self.device_id).order_by("-id").limit(COMMANDS)
        events = []
        seen: dict[str, tuple[Any, ...]] = {}
        for cmd in reversed(latest):
            view = command_view(cmd)
            seen[cmd.req_id] = (view["status"], view["answered_at"])
            if self.commands.get(cmd.req_id) != seen[cmd.req_id]:
                events.append(("command", view))
        self.commands = seen
        return events
