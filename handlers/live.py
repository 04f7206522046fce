"""Live updates for the console: what changed in the caller's scope since the last look.

A `Watch` compares the caller's devices (and, watching one device, its latest commands) with what it
saw the last time and returns the differences as events. The REST adapter sends them as
server-sent events (GET /console/events). It reads the database, so it answers the same whichever
worker the browser reached (docs/console.md), and it sees exactly what `devices_seen_by` lets the
caller see: a user of another tenant gets nothing of this one.
"""

from __future__ import annotations

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


class Watch:
    """What one open page has been told so far."""

    def __init__(self, device_id: int | None) -> None:
        self.device_id = device_id
        self.devices: dict[int, tuple[Any, ...]] = {}
        self.commands: dict[str, tuple[Any, ...]] = {}

    @classmethod
    async def start(cls, principal: Principal, device_id: int | None) -> Watch:
        """404 `device_not_found` for a device outside the caller's scope, before anything is sent."""
        if device_id is not None:
            await owned_device(principal, device_id)
        return cls(device_id)

    async def changes(self, principal: Principal) -> list[tuple[str, dict[str, Any]]]:
        """The events since the last call (the first call: everything in scope)."""
        query = Device.filter(devices_seen_by(principal))
        if self.device_id is not None:
            query = query.filter(id=self.device_id)
        rows = await query.order_by("id").limit(MAX_DEVICES)
        events: list[tuple[str, dict[str, Any]]] = []
        now: dict[int, tuple[Any, ...]] = {}
        for d in rows:
            now[d.id] = (d.name, d.location, d.online, d.last_seen, d.last_payload_at, d.api_key_hash, d.metadata)
            if self.devices.get(d.id) != now[d.id]:
                events.append(("device", live_view(d)))
        events += [("removed", {"id": gone}) for gone in sorted(self.devices.keys() - now.keys())]
        self.devices = now
        if self.device_id is not None and now:
            latest = await Command.filter(device_id=self.device_id).order_by("-id").limit(COMMANDS)
            seen: dict[str, tuple[Any, ...]] = {}
            for cmd in reversed(latest):
                view = command_view(cmd)
                seen[cmd.req_id] = (view["status"], view["answered_at"])
                if self.commands.get(cmd.req_id) != seen[cmd.req_id]:
                    events.append(("command", view))
            self.commands = seen
        return events
