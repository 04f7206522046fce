"""Presence: the broker reports connects and disconnects; devices read it on their status topic."""

from __future__ import annotations

from datetime import UTC, datetime

from handlers.effects import Effect, Publish
from models.devices import Device


def status_topic(username: str) -> str:
    return f"devices/{username}/status"


async def device_online(username: str) -> list[Effect]:
    await Device.filter(username=username).update(online=True, last_seen=datetime.now(UTC))
    return [Publish(status_topic(username), b"online", qos=1, retain=True)]


async def device_offline(username: str) -> list[Effect]:
    await Device.filter(username=username).update(online=False, last_seen=datetime.now(UTC))
    return [Publish(status_topic(username), b"offline", qos=1, retain=True)]


async def reset_presence() -> None:
    """At start-up: no device is connected yet, whatever the last run recorded."""
    await Device.filter(online=True).update(online=False)
