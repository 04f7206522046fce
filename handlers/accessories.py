"""Hardware accessories (spec/hardware-accessory.md): registered by MAC address, logged in with their
own password, then a device like any other on both doors.

An accessory is a registry row of kind "accessory" whose username is its canonical MAC address, so
it owns `devices/<mac>/...` on the broker, and an `Accessory` row with what the spec adds. Its
access tokens are JWTs for their own audience: they open the /v1/ routes and the broker, never the
user routes.
"""

from __future__ import annotations

import hmac
import re
import secrets as random
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from tortoise.transactions import in_transaction

from handlers.accounts import authenticate_jwt
from handlers.context import Context
from handlers.devices import check_permission, identity_of, register_device
from handlers.effects import DisconnectDevice, Effect
from handlers.envelope import Identity
from handlers.errors import Conflict, Forbidden, InvalidPayload, NotFound, RateLimited, Unauthorized
from handlers.principal import Principal
from handlers.secrets import decode_access_token, hash_password, issue_access_token, verify_password
from handlers.tenancy import devices_seen_by
from handlers.views import Timestamp, View
from models.accessories import Accessory
from models.devices import Device

AUDIENCE = "gatehouse:accessory"
LOGIN_FLOW = "accessory_login"
HEX_OCTET = re.compile(r"[0-9A-Fa-f]{2}")
# VersionNumber: two to four dotted integers without leading zeros (1.0, 2.3.11, 10.0.1.7).
VERSION_PATTERN = r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){1,3}$"
# The spec's example spells the fields in camelCase; its schema in snake_case. Both are accepted.
CAMEL = {"hardwareModel": "hardware_model", "firmwareVersion": "firmware_version", "settingsKey": "settings_key"}


def canonical_mac(raw: str) -> str:
    """Six hex octets separated by ':' or '-' (one kind throughout) or not at all, any case, as
    `aa:bb:cc:dd:ee:ff`; anything else is 400 InvalidSchema naming the problem."""
    text = raw
    separators = {c for c in text if c in ":-"}
    if len(separators) > 1:
        problem = "mixes ':' and '-' separators"
    elif separators:
        octets = text.split(separators.pop())
        problem = "" if len(octets) == 6 else f"has {len(octets)} octets, not 6"
    elif len(text) == 12:
        octets = [text[i : i + 2] for i in range(0, 12, 2)]
        problem = ""
    else:
        octets, problem = [], "is not six hex octets (aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabbccddeeff)"
    if not problem:
        bad = [o for o in octets if not HEX_OCTET.fullmatch(o)]
        problem = f"has {bad[0]!r}, which is not a hex octet" if bad else ""
    if problem:
        message = f"MAC address {raw!r} {problem}"
        raise InvalidPayload(message, code="invalid_schema", errors=[{"field": "mac_address", "message": message}])
    return ":".join(octets).lower()


class _BothSpellings:
    """A field sent in snake_case and in camelCase at once: refused by the field's validator."""

    def __init__(self, name: str) -> None:
        self.name = name


def _one_spelling(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for camel, snake in CAMEL.items():
        if camel in data:
            value = data.pop(camel)
            data[snake] = _BothSpellings(camel) if snake in data else value
    return data


def _refuse_both(value: Any) -> Any:
    if isinstance(value, _BothSpellings):
        raise ValueError(f"sent both as {CAMEL[value.name]} and as {value.name}: send one spelling")
    return value


def _password_rule(value: str) -> str:
    if value != value.strip():
        raise ValueError("password must not start or end with spaces")
    return value


def _version_rule(value: str) -> str:
    if not re.fullmatch(VERSION_PATTERN, value):
        raise ValueError(f"{value!r} is not a VersionNumber: 2 to 4 dotted integers without leading zeros, e.g. 2.3.11")
    return value


class RegisterAccessory(BaseModel):
    """The spec's schema. The camelCase of its example (hardwareModel, firmwareVersion, settingsKey)
    is accepted too; one field sent both ways is refused."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(
        min_length=8, max_length=256, description="8 or more characters, no leading or trailing spaces"
    )
    hardware_model: str = Field(min_length=1, max_length=256, description="immutable once registered")
    firmware_version: str = Field(
        max_length=64, json_schema_extra={"pattern": VERSION_PATTERN}, description="a VersionNumber, e.g. 1.0 or 2.3.11"
    )
    settings_key: str = Field(min_length=1, max_length=256)

    _spellings = model_validator(mode="before")(_one_spelling)
    _both = field_validator("hardware_model", "firmware_version", "settings_key", mode="before")(_refuse_both)
    _password = field_validator("password")(_password_rule)
    _version = field_validator("firmware_version")(_version_rule)


class UpdateAccessory(BaseModel):
    """`firmware_version` and/or `settings_key` (either spelling); `hardware_model` is immutable."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # Left out is None; a null sent is refused like any other non-string.
    firmware_version: str = Field(None, max_length=64, json_schema_extra={"pattern": VERSION_PATTERN})  # type: ignore[assignment]
    settings_key: str = Field(None, min_length=1, max_length=256)  # type: ignore[assignment]
    hardware_model: SkipJsonSchema[None] = None  # immutable: sending it is 400 InvalidSchema

    _spellings = model_validator(mode="before")(_one_spelling)
    _both = field_validator("firmware_version", "settings_key", mode="before")(_refuse_both)
    _version = field_validator("firmware_version")(_version_rule)

    @field_validator("hardware_model", mode="before")
    @classmethod
    def _immutable(cls, value: Any) -> None:
        raise ValueError("hardware_model is immutable")

    @model_validator(mode="after")
    def _something(self) -> UpdateAccessory:
        if self.firmware_version is None and self.settings_key is None:
            raise ValueError("send firmware_version and/or settings_key")
        return self


class AccessoryLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=256)


class AccessoryView(View):
    mac_address: str = Field(description="canonical form: lower case, ':' separated (the MQTT username)")
    hardware_model: str
    firmware_version: str
    settings_key: str
    device_id: int = Field(description="the registry id (/gateway/devices/{id})")
    owner: str = Field(description="id of the user who registered it")
    online: bool
    last_seen: Timestamp | None
    created: Timestamp
    modified: Timestamp


class AccessoryToken(View):
    access_token: str = Field(description="JWT for this accessory: Authorization on /v1/, or its MQTT password")
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds until the token expires")


@dataclass(frozen=True, slots=True)
class AccessoryCaller:
    """An accessory authenticated by its own access token."""

    device_id: int
    mac: str


Caller = Principal | AccessoryCaller


def _view(device: Device, accessory: Accessory) -> dict[str, object]:
    return {
        "mac_address": device.username,
        "hardware_model": accessory.hardware_model,
        "firmware_version": accessory.firmware_version,
        "settings_key": accessory.settings_key,
        "device_id": device.id,
        "owner": str(device.owner_id),  # type: ignore[attr-defined]
        "online": device.online,
        "last_seen": device.last_seen.isoformat() if device.last_seen else None,
        "created": accessory.created.isoformat(),
        "modified": accessory.modified.isoformat(),
    }


async def authenticate_caller(ctx: Context, token: str) -> Caller:
    """/v1/ routes: a user's access token, or an accessory's (the audience tells which)."""
    if not token:
        raise Unauthorized("missing credentials: send Authorization: <JWT>", code="missing_credentials")
    try:
        audience = jwt.decode(token, options={"verify_signature": False}).get("aud")
    except jwt.PyJWTError:
        raise Unauthorized("invalid access token", code="token_invalid") from None
    if audience != AUDIENCE:
        return await authenticate_jwt(ctx, token)  # checks the signature and the users' audience
    device = await _token_device(ctx, token)
    if device is None:
        raise Unauthorized("accessory no longer registered", code="token_invalid")
    return AccessoryCaller(device.id, device.username)


async def _token_device(ctx: Context, token: str) -> Device | None:
    """The accessory a valid token of ours names, if it is still the registration it was issued to."""
    claims = decode_access_token(ctx.jwt_secret, token, audience=AUDIENCE)
    device = await Device.get_or_none(username=str(claims["sub"]), kind="accessory").prefetch_related("accessory")
    if device is None or device.accessory is None:
        return None
    if not hmac.compare_digest(str(claims.get("nonce", "")), device.accessory.token_nonce):
        return None
    return device


async def _visible(caller: Caller, mac: str, need: str | None = None) -> tuple[Device, Accessory]:
    """The accessory if the caller sees it (itself; its owner's tenant); 404 otherwise."""
    if isinstance(caller, AccessoryCaller):
        query = Device.filter(id=caller.device_id, username=mac)
    else:
        query = Device.filter(devices_seen_by(caller), username=mac)
    device = await query.filter(kind="accessory").prefetch_related("accessory").first()
    if device is None or device.accessory is None:
        raise NotFound(f"accessory {mac} not found", code="accessory_not_found")
    if isinstance(caller, Principal):
        check_permission(caller, device, need)
    return device, device.accessory


def _user(caller: Caller, action: str) -> Principal:
    if isinstance(caller, AccessoryCaller):
        raise Forbidden(f"an accessory's token cannot {action}: use a user's", code="permission_denied")
    return caller


async def register(caller: Caller, raw_mac: str, req: RegisterAccessory) -> dict[str, object]:
    mac = canonical_mac(raw_mac)
    who = _user(caller, "register accessories")
    password_hash = await hash_password(req.password)
    try:
        async with in_transaction():
            device = await register_device(
                who, name=f"{req.hardware_model} {mac}"[:200], kind="accessory", username=mac
            )
            accessory = await Accessory.create(
                device=device,
                password_hash=password_hash,
                hardware_model=req.hardware_model,
                firmware_version=req.firmware_version,
                settings_key=req.settings_key,
                token_nonce=random.token_hex(16),
            )
    except Conflict as exc:
        raise Conflict(
            f"an accessory with MAC address {mac} is already registered",
            code="duplicate_mac_address",
            status_header="DuplicateMacAddress",
        ) from exc
    return _view(device, accessory)


async def login(ctx: Context, raw_mac: str, req: AccessoryLogin, *, address: str = "") -> dict[str, object]:
    """The accessory's own token. A wrong password and an unknown MAC are the same 401."""
    mac = canonical_mac(raw_mac)
    async with ctx.limiter.guard(LOGIN_FLOW, account=mac, address=address) as attempt:
        device = await Device.get_or_none(username=mac, kind="accessory").prefetch_related("accessory")
        accessory = device.accessory if device else None
        if not await verify_password(req.password, accessory.password_hash if accessory else "") or not accessory:
            attempt.fail()
            raise Unauthorized("invalid MAC address or password", code="invalid_credentials")
    return _token(ctx, device, accessory)


def _token(ctx: Context, device: Device, accessory: Accessory) -> dict[str, object]:
    token, expires_in = issue_access_token(
        ctx.jwt_secret, device.username, ctx.access_token_minutes, aud=AUDIENCE, nonce=accessory.token_nonce
    )
    return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}


async def get_accessory(caller: Caller, raw_mac: str) -> dict[str, object]:
    return _view(*await _visible(caller, canonical_mac(raw_mac)))


async def update_accessory(caller: Caller, raw_mac: str, req: UpdateAccessory) -> dict[str, object]:
    device, accessory = await _visible(caller, canonical_mac(raw_mac), "change_device")
    changes = req.model_dump(exclude_none=True, exclude={"hardware_model"})
    accessory.update_from_dict(changes)
    await accessory.save(update_fields=[*changes, "modified"])
    return _view(device, accessory)


async def delete_accessory(caller: Caller, raw_mac: str) -> tuple[dict[str, object], list[Effect]]:
    """Deleted with its registry row and credentials; its MQTT connections are closed."""
    mac = canonical_mac(raw_mac)
    device, accessory = await _visible(_user(caller, "delete accessories"), mac, "delete_device")
    view = _view(device, accessory)
    await device.delete()
    return view, [DisconnectDevice(device.username, "accessory deleted", forget=True)]


def _looks_like_jwt(password: str) -> bool:
    return password.startswith("eyJ") and password.count(".") == 2


async def authenticate_mqtt(ctx: Context, device: Device, password: str) -> Identity | None:
    """MQTT CONNECT as an accessory: its access token (refused once expired) or its password
    (argon2, with the login's failure budget per MAC)."""
    if _looks_like_jwt(password):
        try:
            token_device = await _token_device(ctx, password)
        except Unauthorized:
            return None
        return identity_of(device) if token_device is not None and token_device.id == device.id else None
    accessory = await Accessory.get_or_none(device_id=device.id)
    try:
        async with ctx.limiter.guard(LOGIN_FLOW, account=device.username) as attempt:
            if accessory is None or not await verify_password(password, accessory.password_hash):
                attempt.fail()
                return None
    except RateLimited:  # a spent budget: refused like a wrong password
        return None
    return identity_of(device)
