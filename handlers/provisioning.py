"""Provisioning: a one-time token, claimed once, becomes the device's API key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from tortoise.transactions import in_transaction

from handlers import qr
from handlers.accounts import Principal
from handlers.context import Context, Links
from handlers.devices import owned_device
from handlers.effects import DisconnectDevice, Effect
from handlers.errors import Conflict, Gone, NotFound
from handlers.secrets import digest, new_secret
from handlers.views import Timestamp, View
from models.devices import Device, DeviceClaim, ProvisioningToken


class ProvisionRequest(BaseModel):
    notes: str = Field("", max_length=500)
    lifetime_minutes: float | None = Field(None, gt=0, le=525_600)


class ClaimRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    device_metadata: dict[str, Any] = Field(default_factory=dict)


class ProvisioningTokenView(View):
    token: str = Field(description="one-time token; shown once")
    expires_at: Timestamp | None = Field(description="null: the token never expires")
    device_id: int
    claim_payload: str = Field(
        description='what the firmware needs to claim, as JSON text: {"claim_url", "token"} (shown once)'
    )
    qr_code: str = Field(description="claim_payload as a QR code: a data:image/png;base64 URI")


class MqttLinks(View):
    """Where and as whom the claimed device connects over MQTT (0: that listener is off)."""

    host: str
    port: int
    tls_port: int
    ws_port: int
    username: str
    telemetry_topic: str
    commands_topic: str


class ClaimResponse(View):
    device_id: int
    api_key: str = Field(description="the device's credential; shown once")
    ingest_url: str
    token_expires_at: Timestamp | None
    mqtt: MqttLinks


async def issue_token(
    principal: Principal, device_id: int, req: ProvisionRequest, links: Links | None = None
) -> dict[str, object]:
    """Issue a provisioning token for a device the caller owns; shown once, stored hashed, with the
    claim payload for the firmware (and as a QR code to scan)."""
    device = await owned_device(principal, device_id, "change_device")
    token = new_secret()
    expires_at = datetime.now(UTC) + timedelta(minutes=req.lifetime_minutes) if req.lifetime_minutes else None
    await ProvisioningToken.create(device=device, token_hash=digest(token), notes=req.notes, expires_at=expires_at)
    payload = json.dumps({"claim_url": f"{(links or Links()).public_url}/gateway/devices/claim", "token": token})
    return {
        "token": token,
        "expires_at": expires_at.isoformat() if expires_at else None,
        "device_id": device.id,
        "claim_payload": payload,
        "qr_code": qr.data_uri(payload),
    }


async def claim_device(
    ctx: Context, req: ClaimRequest, *, source: str, remote: str = ""
) -> tuple[dict[str, object], list[Effect]]:
    """Exchange a provisioning token for a new API key; exactly one of racing claims wins."""
    now = datetime.now(UTC)
    token = await ProvisioningToken.get_or_none(token_hash=digest(req.token))
    if token is None:
        raise NotFound("unknown provisioning token", code="token_unknown")
    if token.used_at is not None:
        raise Conflict("provisioning token already used", code="token_used")
    if token.expires_at is not None and token.expires_at <= now:
        raise Gone("provisioning token expired", code="token_expired")
    api_key = new_secret()
    async with in_transaction():
        # The conditional update is the lock: only one claim sees used_at still empty.
        won = await ProvisioningToken.filter(id=token.id, used_at=None).update(used_at=now)
        if not won:
            raise Conflict("provisioning token already used", code="token_used")
        await Device.filter(id=token.device_id).update(  # type: ignore[attr-defined]
            api_key_hash=digest(api_key), api_key_created_at=now, metadata=req.device_metadata
        )
        await DeviceClaim.create(
            device_id=token.device_id,  # type: ignore[attr-defined]
            metadata=req.device_metadata,
            source=source,
            remote=remote[:200],
        )
    device = await Device.get(id=token.device_id)  # type: ignore[attr-defined]
    body = {
        "device_id": device.id,
        "api_key": api_key,
        "ingest_url": f"{ctx.links.public_url}/gateway/device-data/ingest",
        "token_expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "mqtt": {
            "host": ctx.links.mqtt_host,
            "port": ctx.links.mqtt_port,
            "tls_port": ctx.links.mqtts_port,
            "ws_port": ctx.links.ws_port,
            "username": device.username,
            "telemetry_topic": f"devices/{device.username}/telemetry",
            "commands_topic": f"devices/{device.username}/commands/req/+",
        },
    }
    # The old key stops working at once: drop connections that authenticated with it.
    return body, [DisconnectDevice(device.username, "api key replaced by a new claim")]
