"""The device registry as owners see it, and device authentication for both doors."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from handlers.accounts import Principal
from handlers.context import Context
from handlers.effects import DisconnectDevice, Effect
from handlers.envelope import Identity
from handlers.errors import Conflict, NotFound, Unauthorized
from handlers.secrets import digest, digest_matches
from handlers.tenancy import devices_seen_by, has_tenant, require
from handlers.views import Timestamp, View
from models.devices import DEVICE_KINDS, Device, DeviceClaim, ProvisioningToken

# MQTT usernames become topic levels: no wildcards, no separators, nothing reserved.
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,127}$")
RESERVED_USERNAMES = {"provision", "anonymous"}
# Accessories are registered by MAC with their own record (/v1/accessory/{mac}/register).
CREATABLE_KINDS = tuple(k for k in DEVICE_KINDS if k != "accessory")
# Kinds whose MQTT password is the API key of a provisioning claim (the others have their own logins).
API_KEY_KINDS = ("esp32", "mailbox", "lock_gateway")


class CreateDevice(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    location: str = Field("", max_length=200)
    username: str | None = Field(
        None,
        description="MQTT username; generated when left out",
        json_schema_extra={"pattern": USERNAME_RE.pattern, "not": {"enum": sorted(RESERVED_USERNAMES)}},
    )
    kind: str = Field("esp32", json_schema_extra={"enum": list(CREATABLE_KINDS)})

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None and (not USERNAME_RE.fullmatch(value) or value.lower() in RESERVED_USERNAMES):
            raise ValueError("username must be 1-128 of A-Z a-z 0-9 : . _ - and not a reserved name")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value == "accessory":
            raise ValueError("accessories are registered at POST /v1/accessory/{mac_address}/register")
        if value not in CREATABLE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CREATABLE_KINDS)}")
        return value


class DeviceView(View):
    id: int
    name: str
    location: str
    kind: str
    username: str = Field(description="MQTT username (the device's public identifier)")
    owner: str = Field(description="id of the owning user")
    online: bool
    last_seen: Timestamp | None
    has_api_key: bool = Field(description="true once a provisioning token was claimed")
    metadata: dict[str, Any] = Field(description="device_metadata of the last claim")
    created: Timestamp


class DeviceList(View):
    count: int
    results: list[DeviceView]


class ClaimRecord(View):
    claimed_at: Timestamp
    metadata: dict[str, Any]
    source: Literal["http", "mqtt"]
    remote: str = Field(description="the claiming client's address")


class ClaimList(View):
    device_id: int
    results: list[ClaimRecord] = Field(description="the last 50 claims, newest first")


def device_view(device: Device) -> dict[str, object]:
    return {
        "id": device.id,
        "name": device.name,
        "location": device.location,
        "kind": device.kind,
        "username": device.username,
        "owner": str(device.owner_id),  # type: ignore[attr-defined]
        "online": device.online,
        "last_seen": device.last_seen.isoformat() if device.last_seen else None,
        "has_api_key": device.api_key_hash is not None,
        "metadata": device.metadata,
        "created": device.created.isoformat(),
    }


async def create_device(principal: Principal, req: CreateDevice) -> dict[str, object]:
    username = req.username or f"{req.kind.replace('_', '-')}-{secrets.token_hex(6)}"
    device = await register_device(principal, name=req.name, kind=req.kind, username=username, location=req.location)
    return device_view(device)


async def register_device(principal: Principal, *, name: str, kind: str, username: str, location: str = "") -> Device:
    """A new registry row owned by the caller, in the caller's tenant (`add_device` for tenant users);
    409 `duplicate_username` when the username is taken."""
    if has_tenant(principal):
        require(principal, "add_device")
    try:
        return await Device.create(
            name=name,
            location=location,
            kind=kind,
            username=username,
            owner_id=principal.user_id,
            # The creator's tenant: its users see the device (handlers.tenancy.devices_seen_by).
            tenant_partner_id=principal.partner_id,
            tenant_customer_id=principal.customer_id,
        )
    except IntegrityError as exc:
        raise Conflict(f"a device with username {username!r} already exists", code="duplicate_username") from exc


async def owned_device(principal: Principal, device_id: int, need: str | None = None) -> Device:
    """The device if the caller sees it (their own, their tenants', or any for gooee); NotFound
    otherwise, so ids do not leak. `need`: the permission the action takes (`check_permission`)."""
    device = await Device.filter(devices_seen_by(principal), id=device_id).first()
    if device is None:
        raise NotFound(f"device {device_id} not found", code="device_not_found")
    check_permission(principal, device, need)
    return device


def check_permission(principal: Principal, device: Device, need: str | None) -> None:
    """A user with a tenant must hold `need` (403 `permission_denied`); `delete_device` only for a
    device that is not their own."""
    if need and has_tenant(principal):
        own = str(device.owner_id) == principal.user_id  # type: ignore[attr-defined]
        if not (need == "delete_device" and own):
            require(principal, need)


async def list_devices(principal: Principal) -> dict[str, object]:
    devices = await Device.filter(devices_seen_by(principal)).order_by("id")
    return {"count": len(devices), "results": [device_view(d) for d in devices]}


async def get_device(principal: Principal, device_id: int) -> dict[str, object]:
    return device_view(await owned_device(principal, device_id))


async def delete_device(principal: Principal, device_id: int) -> list[Effect]:
    device = await owned_device(principal, device_id, "delete_device")
    await device.delete()
    return [DisconnectDevice(device.username, "device deleted", forget=True)]


async def revoke_api_key(principal: Principal, device_id: int) -> list[Effect]:
    """The device's API key stops working now (its connections close); a new provisioning token,
    once claimed, gives it a new one. 409 `no_api_key` when it has none."""
    device = await owned_device(principal, device_id, "change_device")
    if device.kind not in API_KEY_KINDS:
        raise Conflict(f"a {device.kind} does not log in with an API key", code="no_api_key")
    revoked = await Device.filter(id=device.id, api_key_hash__isnull=False).update(
        api_key_hash=None, api_key_created_at=None
    )
    if not revoked:
        raise Conflict(f"device {device.id} has no API key", code="no_api_key")
    # A token issued before the revocation would hand out a new key: it expires now too.
    now = datetime.now(UTC)
    unused = ProvisioningToken.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), device_id=device.id)
    await unused.filter(used_at__isnull=True).update(expires_at=now)
    return [DisconnectDevice(device.username, "api key revoked")]


async def list_claims(principal: Principal, device_id: int) -> dict[str, object]:
    device = await owned_device(principal, device_id)
    claims = await DeviceClaim.filter(device_id=device.id).order_by("-id").limit(50)
    return {
        "device_id": device.id,
        "results": [
            {"claimed_at": c.claimed_at.isoformat(), "metadata": c.metadata, "source": c.source, "remote": c.remote}
            for c in claims
        ],
    }


async def authenticate_device(ctx: Context, username: str, password: str) -> Identity | None:
    """MQTT CONNECT: the username names the device, the password is its API key (an accessory's:
    its access token or its password, `handlers.accessories`; a Gateway Lite's: its installation code)."""
    device = await Device.get_or_none(username=username)
    if device is not None and device.kind == "accessory":
        from handlers.accessories import authenticate_mqtt  # accessories build on this module

        return await authenticate_mqtt(ctx, device, password)
    if device is not None and device.kind == "gateway_lite":
        from handlers import gateway_lite  # Gateway Lites build on this module

        return await gateway_lite.authenticate_mqtt(ctx, device, password)
    if device is not None and device.kind == "lock_gateway":
        from handlers import iotlock  # IoTLock builds on this module

        return await iotlock.authenticate_mqtt(device, password)
    if not digest_matches(password, device.api_key_hash if device else None) or device is None:
        return None
    return identity_of(device)


def identity_of(device: Device) -> Identity:
    return Identity("device", device.username, device.id, str(device.owner_id))  # type: ignore[attr-defined]


async def authenticate_api_key(api_key: str) -> Identity:
    """HTTP ingest: `Authorization: Bearer <api_key>` finds the device by the key's digest."""
    if not api_key:
        raise Unauthorized("missing API key: send Authorization: Bearer <api_key>", code="missing_api_key")
    device = await Device.get_or_none(api_key_hash=digest(api_key))
    if device is None or not digest_matches(api_key, device.api_key_hash):
        raise Unauthorized("invalid API key", code="invalid_api_key")
    return identity_of(device)
