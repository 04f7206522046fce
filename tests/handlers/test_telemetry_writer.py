"""The group-commit writer on the real storage lane of each backend: batches, newest value, refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tortoise.exceptions import IntegrityError

from handlers.telemetry_writer import TelemetryWriter
from models.accounts import User
from models.db import close_db, init_db
from models.devices import Device
from models.telemetry import Sample, Telemetry

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def writer(db_url: str, tmp_path: Path) -> AsyncIterator[TelemetryWriter]:
    # A file, not :memory:, so SQLite takes its own fast lane as the server does.
    url = f"sqlite://{tmp_path / 'gatehouse.db'}" if db_url.startswith("sqlite") else db_url
    db = await init_db(url)
    writer = TelemetryWriter(batch_max=100, batch_delay=0.002)
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
        await close_db(db)


async def _device(username: str) -> Device:
    owner = await User.create(username=f"{username}@example.com", account_type="customer")
    return await Device.create(name="meter", username=username, owner_id=owner.id)


def _sample(device_id: int, seq: int, payload: str | None = None) -> Sample:
    return Sample(device_id, T0 + timedelta(milliseconds=seq), payload or json.dumps({"seq": seq}), "mqtt")


async def test_concurrent_samples_share_batches_and_the_newest_is_the_devices(writer: TelemetryWriter) -> None:
    a, b = await _device("esp32-a"), await _device("esp32-b")
    await asyncio.gather(*(writer.write(_sample(d.id, seq)) for seq in range(150) for d in (a, b)))
    assert writer.committed == 300
    assert writer.batches < 300
    rows = await Telemetry.filter(device_id=a.id).order_by("id").values_list("payload", flat=True)
    assert [r["seq"] for r in rows] == list(range(150))
    fresh = await Device.get(id=b.id)
    assert fresh.last_payload == {"seq": 149}
    assert fresh.last_payload_at == fresh.last_seen == T0 + timedelta(milliseconds=149)


async def test_a_sample_the_database_refuses_fails_alone(writer: TelemetryWriter) -> None:
    device = await _device("esp32-c")
    gone = await _device("esp32-gone")
    gone_id = gone.id
    await gone.delete()
    results = await asyncio.gather(
        *(writer.write(_sample(device.id, seq)) for seq in range(20)),
        writer.write(_sample(gone_id, 99)),
        return_exceptions=True,
    )
    assert results[:20] == [None] * 20
    assert isinstance(results[20], IntegrityError)
    assert await Telemetry.filter(device_id=device.id).count() == 20
    assert await Telemetry.filter(device_id=gone_id).count() == 0
    # The writer (and its connection) still works afterwards.
    await writer.write(_sample(device.id, 20))
    assert (await Device.get(id=device.id)).last_payload == {"seq": 20}
