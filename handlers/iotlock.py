"""IoTLock (spec/iotlock.md, docs/iotlock.md): accounts shared by their members, gateways as things
with a channel, mailboxes as channels connected to a gateway, PINs, unlocking, history.

Every object belongs to one account; a caller reaches it only through their membership (404
otherwise, as if it did not exist). Commands go through `handlers.iotlock_commands`.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from handlers import iotlock_commands as commands
from handlers import user_keys
from handlers.context import Context
from handlers.devices import identity_of, register_device
from handlers.effects import Effect, GrantChannels
from handlers.envelope import Identity
from handlers.errors import Conflict, Gone, InvalidPayload, NotFound
from handlers.invitations import invite
from handlers.iotlock_commands import CommandView, SendOptions
from handlers.mail import send_mail
from handlers.mailed_keys import check_new_password
from handlers.principal import Principal
from handlers.registration import Detail, Name
from handlers.secrets import digest, digest_matches, hash_password, keyed_digest, new_secret, seal, unseal
from handlers.tenancy import PageQuery
from handlers.user_rules import EMAIL_RE, check_username_free, field_error
from handlers.views import Timestamp, View
from models.accounts import User
from models.devices import Device
from models.iotlock import LockAccount, LockCommand, LockGateway, LockHistory, LockMember, LockPin, Mailbox

__all__ = ["Detail"]

REGISTERED = "Account registered. Please check your email to activate it."
ACTIVATED = "Account activated. You can login now."
PIN_RE = re.compile(r"[1-9][0-9]{3,7}")
PIN_PURPOSE = "iotlock-pin"
ACTIVATION = "activation"

# --- schemas ---------------------------------------------------------------------------------------


class Body(BaseModel):
    """A request body: a key it does not name is refused (400 `invalid_schema`)."""

    model_config = ConfigDict(extra="forbid")


class LockRegistration(Body):
    email: str = Field(min_length=3, max_length=254, description="the first member's email: their username")
    password: str = Field(max_length=128, description="see the password rules (docs/users.md)")
    first_name: Name
    last_name: Name
    account_name: str = Field(min_length=1, max_length=200)


class LockActivation(Body):
    activation_key: str = Field(min_length=1, max_length=200, description="the key from the registration mail")


class InviteMember(Body):
    email: str = Field(min_length=3, max_length=254)
    first_name: str = Field("", max_length=30)
    last_name: str = Field("", max_length=30)


class MemberView(View):
    user_id: str
    email: str
    first_name: str
    last_name: str
    status: str = Field(description="the user's account_status: pending until they activate")
    joined: Timestamp


class AccountView(View):
    id: str
    name: str
    created: Timestamp
    members: list[MemberView]


class NewGateway(Body):
    name: str = Field(min_length=1, max_length=200)
    public_key: str = Field("", max_length=2000, description="the gateway's public key (DESTRUCT names it)")


class NewMailbox(Body):
    name: str = Field(min_length=1, max_length=200)
    public_key: str = Field(min_length=1, max_length=2000, description="the mailbox's public key")


class NewPin(Body):
    pin: str = Field(description="4 to 8 digits, not starting with 0 (the pack carries it as a number)")


class MqttLogin(View):
    host: str
    port: int
    tls_port: int
    client_id: str = Field(description="connect with this client id and clean_session=0")
    username: str = Field(description="the thing id")
    password: str = Field(description="shown once; stored hashed")
    req_topic: str = Field(description="the filter commands arrive on (the session is subscribed to it)")
    res_topic: str = Field(description="answers go to <res_topic>/<command_id>, events to <res_topic>/events")


class PinView(View):
    id: str
    created: Timestamp


class MailboxView(View):
    id: str
    gateway_id: str
    name: str
    channel_id: str
    public_key: str
    created: Timestamp
    pins: list[PinView]


class GatewayView(View):
    id: str
    name: str
    thing_id: str
    channel_id: str
    public_key: str
    online: bool
    last_seen: Timestamp | None
    created: Timestamp
    mailboxes: list[MailboxView]


class GatewayList(View):
    count: int
    results: list[GatewayView]


class NewGatewayView(GatewayView):
    mqtt: MqttLogin
    commands: list[CommandView] = Field(description="CONNECT and REGISTER, sent to the gateway")


class NewMailboxView(MailboxView):
    commands: list[CommandView] = Field(description="ADD (to the gateway) and Mailbox (on the mailbox's channel)")


class HistoryEntry(View):
    id: int
    at: Timestamp
    kind: str = Field(description="command, outcome or event")
    name: str = Field(description="the command's action, or the event")
    command_id: str | None
    status: str | None
    detail: dict[str, Any]


class HistoryPage(View):
    count: int
    results: list[HistoryEntry] = Field(description="newest first")


# --- accounts --------------------------------------------------------------------------------------


async def register(ctx: Context, req: LockRegistration, *, address: str = "") -> dict[str, str]:
    """The account and its first member, pending, with an activation key by mail. Nothing is written
    when a check fails."""
    email = req.email.strip()
    if not EMAIL_RE.match(email):
        raise field_error(InvalidPayload, "email", "must be an email address", "invalid_email")
    check_new_password(req.password, req.password)
    await ctx.limiter.attempt("iotlock_registration", account=email.lower(), address=address)
    taken = field_error(InvalidPayload, "email", f"{email} is already registered", "duplicate_username")
    try:
        await check_username_free(email)
    except Conflict:
        raise taken from None
    if await User.filter(username__iexact=email).exists():
        raise taken
    password_hash = await hash_password(req.password)
    now = datetime.now(UTC)
    try:
        async with in_transaction():
            user = await User.create(
                username=email, password_hash=password_hash, account_type="customer",
                first_name=req.first_name, last_name=req.last_name,
                account_status="pending", account_status_updated=now, password_changed=now,
            )  # fmt: skip
            account = await LockAccount.create(name=req.account_name.strip() or req.account_name)
            await LockMember.create(account=account, user=user)
            key = await user_keys.issue(user, ACTIVATION, timedelta(days=ctx.users.activation_days), {"iotlock": True})
    except IntegrityError:
        raise taken from None
    await send_mail(
        ctx, email, "Activate your IoTLock account",
        f"Welcome, {req.first_name}.\n\nYour activation key: {key}\n\n"
        "Activate your account with POST /iotlock/activate and this key.\n"
        f"It works once and expires in {ctx.users.activation_days:g} days.\n",
    )  # fmt: skip
    return {"detail": REGISTERED}


async def activate(ctx: Context, req: LockActivation, *, address: str = "") -> dict[str, str]:
    """The activation key from the registration mail, used once: the member may log in."""
    await ctx.limiter.attempt("registration", account=req.activation_key, address=address)
    bad = field_error(InvalidPayload, "activation_key", "unknown or used activation key", "invalid_key")
    try:
        async with in_transaction():
            row = await user_keys.take(ACTIVATION, req.activation_key, what="activation key")
            user = await User.get(id=row.user_id)  # type: ignore[attr-defined]
            if user.account_status != "pending" or not user.password_hash:
                raise bad
            user.account_status, user.account_status_updated = "active", datetime.now(UTC)
            await user.save(update_fields=["account_status", "account_status_updated", "modified"])
    except Gone:
        raise field_error(Gone, "activation_key", "the activation key expired", "key_expired") from None
    except InvalidPayload:
        raise bad from None
    return {"detail": ACTIVATED}


async def account_of(principal: Principal) -> LockAccount:
    member = await LockMember.get_or_none(user_id=principal.user_id).prefetch_related("account")
    if member is None:
        raise NotFound("you are not a member of an IoTLock account", code="account_not_found")
    return member.account


def _member_view(member: LockMember) -> dict[str, Any]:
    user = member.user
    return {
        "user_id": str(user.id), "email": user.username, "first_name": user.first_name,
        "last_name": user.last_name, "status": user.account_status, "joined": member.joined,
    }  # fmt: skip


async def get_account(principal: Principal) -> dict[str, Any]:
    account = await account_of(principal)
    members = await LockMember.filter(account=account).order_by("id").prefetch_related("user")
    return {
        "id": str(account.id), "name": account.name, "created": account.created,
        "members": [_member_view(m) for m in members],
    }  # fmt: skip


async def add_member(ctx: Context, principal: Principal, req: InviteMember) -> dict[str, Any]:
    """A new address is invited (users flow); a user in no account joins at once; 409 otherwise."""
    account = await account_of(principal)
    email = req.email.strip()
    if not EMAIL_RE.match(email):
        raise field_error(InvalidPayload, "email", "must be an email address", "invalid_email")
    user = await User.get_or_none(username__iexact=email)
    if user is not None and await LockMember.filter(user=user).exists():
        raise field_error(Conflict, "email", f"{email} is already a member of an IoTLock account", "already_member")
    try:
        async with in_transaction():
            fresh = user is None
            if user is None:
                await check_username_free(email)
                user = await User.create(
                    username=email, account_type="customer", first_name=req.first_name.strip(),
                    last_name=req.last_name.strip(),
                )  # fmt: skip
            member = await LockMember.create(account=account, user=user)
    except IntegrityError:
        raise field_error(Conflict, "email", f"{email} is already a member", "already_member") from None
    if fresh:
        await invite(ctx, user)
    else:
        await send_mail(ctx, user.username, "You joined an IoTLock account",
                        f"You are now a member of the IoTLock account {account.name!r}.\n")  # fmt: skip
    member.user = user
    return _member_view(member)


async def remove_member(principal: Principal, raw_user_id: str) -> None:
    """Any member may remove any member (themself too: leaving); the last one not while the account
    has gateways. The gateways the leaver added pass to a remaining member."""
    account = await account_of(principal)
    try:
        user_id = uuid.UUID(raw_user_id)
    except ValueError:
        user_id = None
    async with in_transaction():
        member = await LockMember.get_or_none(account=account, user_id=user_id) if user_id else None
        if member is None:
            raise NotFound(f"member {raw_user_id[:40]} not found", code="member_not_found")
        others = await LockMember.filter(account=account).exclude(id=member.id).order_by("id").first()
        if others is None and await LockGateway.filter(account=account, removed_at=None).exists():
            raise Conflict("the last member cannot leave while the account has gateways", code="last_member")
        if others is not None:
            await Device.filter(lock_gateway__account=account, owner_id=user_id).update(owner_id=others.user_id)  # type: ignore[attr-defined]
        await member.delete()


# --- gateways and mailboxes --------------------------------------------------------------------------


def _uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


async def _gateway(principal: Principal, raw_id: str) -> LockGateway:
    account = await account_of(principal)
    gid = _uuid(raw_id)
    gateway = (
        await LockGateway.get_or_none(id=gid, account=account, removed_at=None).prefetch_related("device")
        if gid
        else None
    )
    if gateway is None:
        raise NotFound(f"gateway {raw_id[:40]} not found", code="gateway_not_found")
    return gateway


async def _mailbox(principal: Principal, raw_id: str) -> Mailbox:
    account = await account_of(principal)
    mid = _uuid(raw_id)
    mailbox = (
        await Mailbox.get_or_none(id=mid, gateway__account=account, gateway__removed_at=None).prefetch_related(
            "gateway"
        )
        if mid
        else None
    )
    if mailbox is None:
        raise NotFound(f"mailbox {raw_id[:40]} not found", code="mailbox_not_found")
    return mailbox


async def _mailbox_view(mailbox: Mailbox) -> dict[str, Any]:
    pins = await LockPin.filter(mailbox=mailbox).order_by("created", "id")
    return {
        "id": str(mailbox.id), "gateway_id": str(mailbox.gateway_id), "name": mailbox.name,  # type: ignore[attr-defined]
        "channel_id": mailbox.channel_id, "public_key": mailbox.public_key, "created": mailbox.created,
        "pins": [{"id": str(p.id), "created": p.created} for p in pins],
    }  # fmt: skip


async def _gateway_view(gateway: LockGateway) -> dict[str, Any]:
    device = gateway.device
    mailboxes = await Mailbox.filter(gateway=gateway).order_by("created", "id")
    return {
        "id": str(gateway.id), "name": gateway.name, "thing_id": gateway.thing_id, "channel_id": gateway.channel_id,
        "public_key": gateway.public_key, "online": bool(device and device.online),
        "last_seen": device.last_seen if device else None, "created": gateway.created,
        "mailboxes": [await _mailbox_view(m) for m in mailboxes],
    }  # fmt: skip


async def _grant(
    gateway: LockGateway, subscribe: tuple[str, ...] = (), unsubscribe: tuple[str, ...] = ()
) -> GrantChannels:
    """The gateway's channels as they are now: its own and its mailboxes'."""
    channels = await Mailbox.filter(gateway=gateway).order_by("created", "id").values_list("channel_id", flat=True)
    identity = await gateway_identity(gateway, (gateway.channel_id, *channels))
    return GrantChannels(identity, subscribe, unsubscribe)


async def gateway_identity(gateway: LockGateway, channels: tuple[str, ...]) -> Identity:
    device = gateway.device if isinstance(gateway.device, Device) else await Device.get(id=gateway.device_id)  # type: ignore[attr-defined]
    return Identity("device", device.username, device.id, str(device.owner_id), channels)  # type: ignore[attr-defined]


def _requested(bn: str, action: str) -> list[dict[str, Any]]:
    return [{"bn": f"{bn}_", "n": action, "u": "Requested", "vb": True}]


def _keyed(bn: str, action: str, unit: str, value: str) -> list[dict[str, Any]]:
    return [{"bn": f"{bn}_", "n": action, "u": unit, "vs": value}]


async def create_gateway(ctx: Context, principal: Principal, req: NewGateway) -> dict[str, Any]:
    """A thing with its login and channel; its session exists (and is subscribed) before it connects,
    so CONNECT and REGISTER wait there for it."""
    account = await account_of(principal)
    thing_id, channel_id, password = str(uuid.uuid4()), str(uuid.uuid4()), new_secret()
    async with in_transaction():
        device = await register_device(principal, name=req.name, kind="lock_gateway", username=thing_id)
        device.api_key_hash, device.api_key_created_at = digest(password), datetime.now(UTC)
        await device.save(update_fields=["api_key_hash", "api_key_created_at"])
        gateway = await LockGateway.create(
            account=account, device=device, thing_id=thing_id, channel_id=channel_id,
            name=req.name, public_key=req.public_key,
        )  # fmt: skip
        sent = [
            await commands.create_command(ctx, gateway, channel_id, _requested(thing_id, a))
            for a in ("CONNECT", "REGISTER")
        ]
    effects: list[Effect] = [await _grant(gateway, subscribe=(commands.req_filter(channel_id),))]
    await ctx.effector.apply([*effects, *(publish for _, publish in sent)])
    links = ctx.links
    return {
        **await _gateway_view(gateway),
        "mqtt": {
            "host": links.mqtt_host, "port": links.mqtt_port, "tls_port": links.mqtts_port, "client_id": thing_id,
            "username": thing_id, "password": password, "req_topic": commands.req_filter(channel_id),
            "res_topic": f"channels/{channel_id}/messages/res",
        },
        "commands": [commands.command_view(cmd) for cmd, _ in sent],
    }  # fmt: skip


async def list_gateways(principal: Principal, q: PageQuery) -> dict[str, Any]:
    account = await account_of(principal)
    query = LockGateway.filter(account=account, removed_at=None)
    total = await query.count()
    rows = await query.order_by("created", "id").offset(q.offset).limit(q.limit).prefetch_related("device")
    return {"count": total, "results": [await _gateway_view(g) for g in rows]}


async def get_gateway(principal: Principal, raw_id: str) -> dict[str, Any]:
    return await _gateway_view(await _gateway(principal, raw_id))


async def _send(
    ctx: Context, gateway: LockGateway, channel_id: str, pack: list[dict[str, Any]], opts: SendOptions, **kw: Any
) -> dict[str, Any]:
    async with in_transaction():
        cmd, publish = await commands.create_command(ctx, gateway, channel_id, pack, expires_in=opts.expires_in, **kw)
    await ctx.effector.apply([publish])
    return await commands.outcome(ctx, cmd.id, opts.wait)


async def delete_gateway(ctx: Context, principal: Principal, raw_id: str, opts: SendOptions) -> dict[str, Any]:
    """Gone from the API at once; DESTRUCT goes to the gateway, which keeps its login until it answered."""
    gateway = await _gateway(principal, raw_id)
    async with ctx.lock(f"iotlock-gateway:{gateway.id}"):
        async with in_transaction():
            if not await LockGateway.filter(id=gateway.id, removed_at=None).update(removed_at=datetime.now(UTC)):
                raise NotFound(f"gateway {raw_id[:40]} not found", code="gateway_not_found")
            pack = _keyed(gateway.channel_id, "DESTRUCT", "Gateway", gateway.public_key or gateway.thing_id)
            cmd, publish = await commands.create_command(
                ctx, gateway, gateway.channel_id, pack, expires_in=opts.expires_in
            )
        await ctx.effector.apply([publish])
    return await commands.outcome(ctx, cmd.id, opts.wait)


async def create_mailbox(ctx: Context, principal: Principal, raw_id: str, req: NewMailbox) -> dict[str, Any]:
    """The mailbox's channel, connected to the gateway (its session subscribed to it), then ADD to the
    gateway and Mailbox on the new channel."""
    gateway = await _gateway(principal, raw_id)
    async with ctx.lock(f"iotlock-gateway:{gateway.id}"):  # grants computed and applied in order
        async with in_transaction():
            mailbox = await Mailbox.create(
                gateway=gateway, channel_id=str(uuid.uuid4()), name=req.name, public_key=req.public_key
            )
            add = _keyed(gateway.thing_id, "ADD", "PublicKey", req.public_key)
            register = _keyed(mailbox.channel_id, "Mailbox", "PublicKey", req.public_key)
            sent = [
                await commands.create_command(ctx, gateway, gateway.channel_id, add, mailbox=mailbox),
                await commands.create_command(ctx, gateway, mailbox.channel_id, register, mailbox=mailbox),
            ]
        grant = await _grant(gateway, subscribe=(commands.req_filter(mailbox.channel_id),))
        await ctx.effector.apply([grant, *(publish for _, publish in sent)])
    return {**await _mailbox_view(mailbox), "commands": [commands.command_view(c) for c, _ in sent]}


async def get_mailbox(principal: Principal, raw_id: str) -> dict[str, Any]:
    return await _mailbox_view(await _mailbox(principal, raw_id))


async def delete_mailbox(ctx: Context, principal: Principal, raw_id: str, opts: SendOptions) -> dict[str, Any]:
    """DELETE goes to the gateway; the mailbox, its PINs and history go, its channel is disconnected."""
    mailbox = await _mailbox(principal, raw_id)
    gateway = mailbox.gateway
    async with ctx.lock(f"iotlock-gateway:{gateway.id}"):
        async with in_transaction():
            pack = _keyed(gateway.thing_id, "DELETE", "PublicKey", mailbox.public_key)
            cmd, publish = await commands.create_command(
                ctx, gateway, gateway.channel_id, pack, expires_in=opts.expires_in
            )
            if not await Mailbox.filter(id=mailbox.id).delete():
                raise NotFound(f"mailbox {raw_id[:40]} not found", code="mailbox_not_found")
        grant = await _grant(gateway, unsubscribe=(commands.req_filter(mailbox.channel_id),))
        await ctx.effector.apply([grant, publish])
    return await commands.outcome(ctx, cmd.id, opts.wait)


# --- PINs, unlocking, history ----------------------------------------------------------------------------


def _pin_pack(mailbox: Mailbox, action: str, pin: str) -> list[dict[str, Any]]:
    return [{"bn": f"{mailbox.channel_id}_", "n": action, "u": "PIN", "v": int(pin)}]


async def add_pin(ctx: Context, principal: Principal, raw_id: str, req: NewPin, opts: SendOptions) -> dict[str, Any]:
    if not PIN_RE.fullmatch(req.pin):
        raise field_error(InvalidPayload, "pin", "must be 4 to 8 digits, not starting with 0", "invalid_pin")
    mailbox = await _mailbox(principal, raw_id)
    secret = ctx.jwt_secret
    try:
        async with in_transaction():
            pin = await LockPin.create(
                mailbox=mailbox,
                pin_hash=keyed_digest(secret, f"{PIN_PURPOSE}:{mailbox.id}", req.pin),
                pin_sealed=seal(secret, PIN_PURPOSE, req.pin),
            )
            cmd, publish = await commands.create_command(
                ctx, mailbox.gateway, mailbox.channel_id, _pin_pack(mailbox, "AUTH", req.pin),
                mailbox=mailbox, pin_id=pin.id, expires_in=opts.expires_in,
            )  # fmt: skip
    except IntegrityError:
        raise field_error(Conflict, "pin", "the mailbox already has this PIN", "duplicate_pin") from None
    await ctx.effector.apply([publish])
    return await commands.outcome(ctx, cmd.id, opts.wait)


async def remove_pin(
    ctx: Context, principal: Principal, raw_id: str, raw_pin: str, opts: SendOptions
) -> dict[str, Any]:
    mailbox = await _mailbox(principal, raw_id)
    pid = _uuid(raw_pin)
    async with in_transaction():
        pin = await LockPin.get_or_none(id=pid, mailbox=mailbox) if pid else None
        if pin is None or not await LockPin.filter(id=pin.id).delete():
            raise NotFound(f"PIN {raw_pin[:40]} not found", code="pin_not_found")
        clear = unseal(ctx.jwt_secret, PIN_PURPOSE, pin.pin_sealed)
        cmd, publish = await commands.create_command(
            ctx, mailbox.gateway, mailbox.channel_id, _pin_pack(mailbox, "UNAUTH", clear),
            mailbox=mailbox, pin_id=pin.id, expires_in=opts.expires_in,
        )  # fmt: skip
    await ctx.effector.apply([publish])
    return await commands.outcome(ctx, cmd.id, opts.wait)


async def unlock(ctx: Context, principal: Principal, raw_id: str, opts: SendOptions) -> dict[str, Any]:
    mailbox = await _mailbox(principal, raw_id)
    pack = _requested(mailbox.channel_id, "UNLOCK")
    return await _send(ctx, mailbox.gateway, mailbox.channel_id, pack, opts, mailbox=mailbox)


async def history(principal: Principal, raw_id: str, q: PageQuery) -> dict[str, Any]:
    mailbox = await _mailbox(principal, raw_id)
    query = LockHistory.filter(mailbox=mailbox)
    total = await query.count()
    rows = await query.order_by("-id").offset(q.offset).limit(q.limit)
    return {
        "count": total,
        "results": [
            {"id": h.id, "at": h.at, "kind": h.kind, "name": h.name, "command_id": h.command_id,
             "status": h.status, "detail": h.detail}
            for h in rows
        ],
    }  # fmt: skip


async def get_command(ctx: Context, principal: Principal, command_id: str, wait: float) -> dict[str, Any]:
    account = await account_of(principal)
    found = len(command_id) <= commands.ID_MAX and await LockCommand.filter(id=command_id, account=account).exists()
    if not found:
        raise NotFound(f"command {command_id[:40]} not found", code="command_not_found")
    return await commands.outcome(ctx, command_id, wait)


# --- MQTT ------------------------------------------------------------------------------------------------


async def authenticate_mqtt(device: Device, password: str) -> Identity | None:
    """A lock gateway's CONNECT: thing id and password; its identity carries its channels. (One made
    with POST /gateway/devices rather than /iotlock/gateways has no channels: a device as any other.)"""
    if not digest_matches(password, device.api_key_hash):
        return None
    gateway = await LockGateway.get_or_none(device_id=device.id)
    if gateway is None:
        return identity_of(device)
    gateway.device = device
    channels = await Mailbox.filter(gateway=gateway).order_by("created", "id").values_list("channel_id", flat=True)
    return await gateway_identity(gateway, (gateway.channel_id, *channels))
