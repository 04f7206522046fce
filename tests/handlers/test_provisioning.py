"""Provisioning against an in-memory database: issue a token, claim it exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from handlers import accounts, devices, provisioning
from handlers.accounts import Principal
from handlers.context import Context, Links
from handlers.devices import CreateDevice
from handlers.effects import DisconnectDevice
from handlers.errors import Conflict, Gone, NotFound, Unauthorized
from handlers.provisioning import ClaimRequest, ProvisionRequest
from handlers.secrets import digest
from handlers.telemetry_writer import TelemetryWriter
from models.db import close_db, init_db
from models.devices import Device, DeviceClaim, ProvisioningToken

PASSWORD = "Passw0rd!x"


@pytest.fixture
async def ctx(db_url: str) -> AsyncIterator[Context]:
    db = await init_db(db_url)
    try:
        yield Context(
            jwt_secret="x" * 32,
            writer=TelemetryWriter(),
            links=Links("https://gh.example", "mqtt.example", 1883, 8883, 8083),
        )
    finally:
        await close_db(db)


async def _principal(username: str, kind: str = "customer") -> Principal:
    user = await accounts.create_user(username, PASSWORD, kind)
    return Principal(str(user.id), user.username, user.account_type)


@pytest.fixture
async def alice(ctx: Context) -> Principal:
    return await _principal("alice@example.com")


@pytest.fixture
async def device(alice: Principal) -> int:
    """The id of alice's device `esp32-aa`."""
    view = await devices.create_device(alice, CreateDevice(name="meter", username="esp32-aa"))
    return view["id"]  # type: ignore[return-value]


async def _token(who: Principal, device_id: int, **req: object) -> str:
    issued = await provisioning.issue_token(who, device_id, ProvisionRequest.model_validate(req))
    return str(issued["token"])


async def _claim(ctx: Context, token: str, **meta: object) -> tuple[dict[str, object], list[object]]:
    body, effects = await provisioning.claim_device(
        ctx, ClaimRequest(token=token, device_metadata=meta), source="http", remote="10.0.0.1"
    )
    return body, list(effects)


async def test_issue_token(alice: Principal, device: int) -> None:
    issued = await provisioning.issue_token(alice, device, ProvisionRequest(notes="Line A"))
    assert issued["device_id"] == device
    assert issued["expires_at"] is None
    row = await ProvisioningToken.get(device_id=device)
    assert row.token_hash == digest(str(issued["token"]))
    assert row.notes == "Line A"
    assert row.used_at is None


async def test_issue_token_lifetime(alice: Principal, device: int) -> None:
    before = datetime.now(UTC)
    issued = await provisioning.issue_token(alice, device, ProvisionRequest(lifetime_minutes=10))
    expires = datetime.fromisoformat(str(issued["expires_at"]))
    assert before + timedelta(minutes=10) <= expires <= datetime.now(UTC) + timedelta(minutes=10)


async def test_issue_token_for_someone_elses_device(ctx: Context, device: int) -> None:
    bob = await _principal("bob@example.com")
    with pytest.raises(NotFound) as caught:
        await provisioning.issue_token(bob, device, ProvisionRequest())
    assert caught.value.code == "device_not_found"
    assert await ProvisioningToken.all().count() == 0
    admin = await _principal("admin@example.com", "gooee")
    await provisioning.issue_token(admin, device, ProvisionRequest())


async def test_claim(ctx: Context, alice: Principal, device: int) -> None:
    token = await _token(alice, device)
    body, effects = await _claim(ctx, token, fw="1.0.0")
    assert body["device_id"] == device
    assert body["ingest_url"] == "https://gh.example/gateway/device-data/ingest"
    assert body["token_expires_at"] is None
    assert body["mqtt"] == {
        "host": "mqtt.example",
        "port": 1883,
        "tls_port": 8883,
        "ws_port": 8083,
        "username": "esp32-aa",
        "telemetry_topic": "devices/esp32-aa/telemetry",
        "commands_topic": "devices/esp32-aa/commands/req/+",
    }
    assert effects == [DisconnectDevice("esp32-aa", effects[0].reason)]  # type: ignore[attr-defined]
    api_key = str(body["api_key"])
    stored = await Device.get(id=device)
    assert stored.api_key_hash == digest(api_key) != api_key
    assert stored.metadata == {"fw": "1.0.0"}
    identity = await devices.authenticate_api_key(api_key)
    assert (identity.kind, identity.username, identity.device_id) == ("device", "esp32-aa", device)
    assert await devices.authenticate_device(ctx, "esp32-aa", api_key) == identity
    claim = await DeviceClaim.get(device_id=device)
    assert (claim.source, claim.remote, claim.metadata) == ("http", "10.0.0.1", {"fw": "1.0.0"})


async def test_claim_ingest_url_without_public_url(alice: Principal, device: int) -> None:
    """Never the request's Host header (the client chooses it): the configured or derived base."""
    ctx = Context(jwt_secret="x" * 32, writer=TelemetryWriter())
    token = await _token(alice, device)
    body, _ = await _claim(ctx, token)
    assert body["ingest_url"] == "http://localhost:8080/gateway/device-data/ingest"


async def test_claim_unknown_token(ctx: Context, device: int) -> None:
    with pytest.raises(NotFound) as caught:
        await _claim(ctx, "no-such-token")
    assert caught.value.code == "token_unknown"


async def test_claim_used_token(ctx: Context, alice: Principal, device: int) -> None:
    token = await _token(alice, device)
    first, _ = await _claim(ctx, token)
    with pytest.raises(Conflict) as caught:
        await _claim(ctx, token)
    assert (caught.value.status, caught.value.code) == (409, "token_used")
    # The losing claim changed nothing: the first key still works.
    await devices.authenticate_api_key(str(first["api_key"]))
    assert await DeviceClaim.all().count() == 1


async def test_claim_expired_token(ctx: Context, alice: Principal, device: int) -> None:
    token = await _token(alice, device)
    await ProvisioningToken.all().update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(Gone) as caught:
        await _claim(ctx, token)
    assert (caught.value.status, caught.value.code) == (410, "token_expired")
    assert (await Device.get(id=device)).api_key_hash is None
    assert await DeviceClaim.all().count() == 0


async def test_concurrent_claims_exactly_one_wins(ctx: Context, alice: Principal, device: int) -> None:
    token = await _token(alice, device)
    results = await asyncio.gather(*(_claim(ctx, token, n=i) for i in range(5)), return_exceptions=True)
    wins = [r for r in results if isinstance(r, tuple)]
    losses = [r for r in results if isinstance(r, Conflict)]
    assert len(wins) == 1, results
    assert len(losses) == 4, results
    assert {e.code for e in losses} == {"token_used"}
    assert await DeviceClaim.all().count() == 1
    stored = await Device.get(id=device)
    assert stored.api_key_hash == digest(str(wins[0][0]["api_key"]))
    assert stored.metadata == (await DeviceClaim.get()).metadata


async def test_new_claim_replaces_key(ctx: Context, alice: Principal, device: int) -> None:
    async def fresh_key() -> str:
        token = await _token(alice, device)
        body, effects = await _claim(ctx, token)
        assert [e.username for e in effects] == ["esp32-aa"]  # type: ignore[attr-defined]
        return str(body["api_key"])

    old = await fresh_key()
    new = await fresh_key()
    assert old != new
    with pytest.raises(Unauthorized) as caught:
        await devices.authenticate_api_key(old)
    assert caught.value.code == "invalid_api_key"
    assert await devices.authenticate_device(ctx, "esp32-aa", old) is None
    await devices.authenticate_api_key(new)
    claims = await devices.list_claims(alice, device)
    assert len(claims["results"]) == 2  # type: ignore[arg-type]


async def test_authenticate_without_key(ctx: Context, device: int) -> None:
    # A device that never claimed has no key: nothing authenticates as it.
    assert await devices.authenticate_device(ctx, "esp32-aa", "") is None
    assert await devices.authenticate_device(ctx, "esp32-aa", "x") is None
    assert await devices.authenticate_device(ctx, "nobody", "x") is None
    with pytest.raises(Unauthorized) as caught:
        await devices.authenticate_api_key("")
    assert caught.value.code == "missing_api_key"
