"""IoTLock gateways and mailboxes: add them through the API, run them over MQTT, type PINs at keypads.

gatehouse sim lock --gateways 2 --mailboxes 3 --pin 1:4321 --enter-pin 1:4321 --duration 30 [--tls]

Logs in as a member of an IoTLock account, adds N gateways with M mailboxes each (`/iotlock/`),
connects every gateway with its thing id and a persistent session (docs/iotlock.md "MQTT"), keeps
each mailbox's PINs as AUTH / UNAUTH arrive, answers every command and reports a BATTERY event per
mailbox. A network client only, like the other simulators (whose argument helpers it shares).
`LockGateway` is one simulated gateway, usable on its own (e.g. from a test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import secrets
import signal
import ssl
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from firmware_sim.esp32 import ACK_TIMEOUT_S, ERRORS_GRACE_S, KEEPALIVE_S, SetupError, add_common_arguments, endpoints
from firmware_sim.mqtt import MqttClient, MqttError

NOT_USED = {"count", "interval"}  # common simulator options this one has no use for
PIN_WAIT_S = 15.0  # how long a --pin may take to reach its gateway


def _mailbox_pin(value: str) -> tuple[int, str]:
    match = re.fullmatch(r"(\d+):(\d{4,8})", value)
    if not match or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not MAILBOX:PIN (a mailbox number from 1, 4 to 8 digits)")
    return int(match[1]), match[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    for action in parser._actions:
        if action.dest in NOT_USED:
            action.help = argparse.SUPPRESS
    parser.add_argument("--gateways", type=int, default=1, help="number of gateways to add")
    parser.add_argument("--mailboxes", type=int, default=1, help="mailboxes per gateway")
    parser.add_argument("--pin", type=_mailbox_pin, action="append", default=[], metavar="MAILBOX:PIN",
                        help="add this PIN through the API (mailboxes numbered 1.. over all gateways)")  # fmt: skip
    parser.add_argument("--enter-pin", type=_mailbox_pin, action="append", default=[], metavar="MAILBOX:PIN",
                        help="then type it at that mailbox's keypad: UNLOCKED or PIN_REJECTED")  # fmt: skip


@dataclass
class Mailbox:
    number: int  # 1.. over all gateways, in creation order
    id: str
    channel_id: str
    gateway: LockGateway


@dataclass
class LockGateway:
    """One gateway: answers commands on its channels, keeps each mailbox channel's PINs, sends events."""

    name: str
    thing_id: str
    channel_id: str
    password: str
    id: str = ""
    answered: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    pins: dict[str, set[int]] = field(default_factory=dict)  # mailbox channel id -> PINs held
    keys: dict[str, str] = field(default_factory=dict)  # mailbox public key -> its channel id
    seen: set[str] = field(default_factory=set)  # command ids answered (a redelivery is not answered twice)
    client: MqttClient | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    listener: asyncio.Task[None] | None = None

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> LockGateway:
        """From the 201 answer of POST /iotlock/gateways."""
        mqtt = body["mqtt"]
        return cls(body["name"], body["thing_id"], body["channel_id"], mqtt["password"], id=body["id"])

    async def connect(self, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.client = MqttClient()
        login = {"client_id": self.thing_id, "username": self.thing_id, "password": self.password}
        await self.client.connect(
            host, port, **login, keepalive=KEEPALIVE_S, clean_session=False, ssl=ssl_ctx, timeout=ACK_TIMEOUT_S
        )
        self.listener = asyncio.create_task(self._listen())
        await self._subscribe(f"devices/{self.thing_id}/errors")
        await self._subscribe(f"channels/{self.channel_id}/messages/req/+")

    async def add_mailbox(self, channel_id: str, public_key: str = "") -> None:
        """Start serving a mailbox's channel (the server subscribed the session already; again is harmless)."""
        self.pins.setdefault(channel_id, set())
        self.keys[public_key] = channel_id
        await self._subscribe(f"channels/{channel_id}/messages/req/+")

    def held_pins(self, channel_id: str) -> frozenset[int]:
        return frozenset(self.pins.get(channel_id, ()))

    async def wait_for_pin(self, channel_id: str, pin: str | int, timeout: float = PIN_WAIT_S) -> bool:
        """Whether the mailbox holds `pin` within `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while int(pin) not in self.held_pins(channel_id):
                    self.changed.clear()
                    await self.changed.wait()
        return int(pin) in self.held_pins(channel_id)

    async def enter_pin(self, channel_id: str, pin: str | int) -> str:
        """Type `pin` at the mailbox's keypad; reports and returns the event (UNLOCKED or PIN_REJECTED)."""
        if int(pin) in self.held_pins(channel_id):
            await self.send_event(channel_id, {"n": "UNLOCKED", "vs": "pin"})
            return "UNLOCKED"
        await self.send_event(channel_id, {"n": "PIN_REJECTED", "vb": True})
        return "PIN_REJECTED"

    async def send_event(self, channel_id: str, record: dict[str, Any]) -> None:
        await self._publish(f"channels/{channel_id}/messages/res/events", [{"bn": f"{channel_id}_", **record}])
        self.events[record["n"]] += 1

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
        if self.client is not None:
            with contextlib.suppress(OSError, MqttError):
                await self.client.disconnect()

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    # -- internals ---------------------------------------------------------------------------

    async def _subscribe(self, topic_filter: str) -> None:
        assert self.client is not None
        async with asyncio.timeout(ACK_TIMEOUT_S):
            granted = await self.client.subscribe(topic_filter, qos=1)
        if granted not in (0, 1):
            raise MqttError(f"{self.name}: subscription to {topic_filter} refused (SUBACK {granted:#04x})")

    async def _publish(self, topic: str, pack: list[dict[str, Any]]) -> None:
        assert self.client is not None
        async with asyncio.timeout(ACK_TIMEOUT_S):
            await self.client.publish(topic, json.dumps(pack).encode(), qos=1)

    async def _listen(self) -> None:
        assert self.client is not None
        while True:
            topic, payload = await self.client.messages.get()
            try:
                await self._handle(topic, payload)
            except (OSError, MqttError, TimeoutError) as exc:
                print(f"\n{self.name}: cannot answer on {topic}: {exc!r}", file=sys.stderr)

    async def _handle(self, topic: str, payload: bytes) -> None:
        if topic == f"devices/{self.thing_id}/errors":
            self.refused += 1
            try:
                error = json.loads(payload)
                text = f"{error.get('code')}: {error.get('detail')} (on {error.get('topic')})"
            except (ValueError, AttributeError):
                text = payload[:200].decode(errors="replace")
            print(f"\n{self.name}: refused: {text}", file=sys.stderr)
            return
        parts = topic.split("/")
        if len(parts) != 5 or parts[0] != "channels" or parts[2:4] != ["messages", "req"]:
            return
        cid, command_id = parts[1], parts[4]
        try:
            pack = json.loads(payload)
            first = pack[0]
            action, bn = str(first["n"]), first.get("bn", "")
        except (ValueError, TypeError, KeyError, IndexError):
            print(f"\n{self.name}: unreadable command on {topic}", file=sys.stderr)  # no payload: it may hold a PIN
            return
        if command_id in self.seen:
            return
        self.seen.add(command_id)
        reason = self._apply(cid, action, first)
        answer: list[dict[str, Any]] = [{"bn": bn, "n": action, "vs": "error" if reason else "ok"}]
        if reason:
            answer.append({"n": "reason", "vs": reason})
        await self._publish(f"channels/{cid}/messages/res/{command_id}", answer)
        self.answered[action] += 1
        if action == "UNLOCK" and not reason:
            await self.send_event(cid, {"n": "UNLOCKED", "vs": "app"})

    def _apply(self, cid: str, action: str, record: dict[str, Any]) -> str:
        """Act on one command; the reason it failed ("" when it did not)."""
        if action in ("AUTH", "UNAUTH"):
            if not isinstance(record.get("v"), int | float):
                return "no PIN"
            pins, pin = self.pins.setdefault(cid, set()), int(record["v"])
            if action == "UNAUTH" and pin not in pins:
                return "unknown PIN"
            (pins.add if action == "AUTH" else pins.discard)(pin)
            self.changed.set()
        elif action == "DELETE":
            self.pins.pop(self.keys.pop(str(record.get("vs")), ""), None)
        elif action not in ("CONNECT", "REGISTER", "DESTRUCT", "ADD", "Mailbox", "UNLOCK"):
            return f"unknown action {action}"
        return ""


# -- the run -----------------------------------------------------------------------------------


async def _call(session: aiohttp.ClientSession, method: str, url: str, body: Any, auth: dict[str, str]) -> Any:
    async with session.request(method, url, json=body, headers=auth) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 400:
            detail = data.get("detail") if isinstance(data, dict) else data
            raise SetupError(f"{method} {url} -> {resp.status}: {detail}")
        return data


async def _setup(session: aiohttp.ClientSession, args: argparse.Namespace, base: str,
                 ssl_ctx: ssl.SSLContext | None, gateways: list[LockGateway]) -> list[Mailbox]:  # fmt: skip
    login = await _call(session, "POST", f"{base}/auth/login", {"username": args.user, "password": args.password}, {})
    auth = {"Authorization": f"Bearer {login['access_token']}"}

    async def one(i: int) -> list[Mailbox]:
        body = {"name": f"sim-gw-{i + 1}", "public_key": secrets.token_hex(32)}
        gateway = LockGateway.from_api(await _call(session, "POST", f"{base}/iotlock/gateways", body, auth))
        gateways.append(gateway)
        await gateway.connect(args.mqtt_host, args.mqtt_port, ssl_ctx)
        made = []
        for k in range(args.mailboxes):
            number = i * args.mailboxes + k + 1
            body = {"name": f"sim-mb-{number}", "public_key": secrets.token_hex(32)}
            mb = await _call(session, "POST", f"{base}/iotlock/gateways/{gateway.id}/mailboxes", body, auth)
            await gateway.add_mailbox(mb["channel_id"], body["public_key"])
            made.append(Mailbox(number, mb["id"], mb["channel_id"], gateway))
        return made

    mailboxes = [m for made in await asyncio.gather(*(one(i) for i in range(args.gateways))) for m in made]
    for m in mailboxes:
        await m.gateway.send_event(m.channel_id, {"n": "BATTERY", "v": random.randint(60, 100), "u": "%"})
    for number, pin in args.pin:
        m = mailboxes[number - 1]
        cmd = await _call(session, "POST", f"{base}/iotlock/mailboxes/{m.id}/pins", {"pin": pin}, auth)
        if not await m.gateway.wait_for_pin(m.channel_id, pin):
            cmd = await _call(session, "GET", f"{base}/iotlock/commands/{cmd['id']}", None, auth)
            raise SetupError(f"--pin for mailbox {number}: the gateway does not hold it (command {cmd['status']})")
    return mailboxes


async def run(args: argparse.Namespace, settings: Any) -> int:
    if not args.user or not args.password:
        print(
            "gatehouse sim: --user/--password (or GATEHOUSE_SIM_USER/GATEHOUSE_SIM_PASSWORD) required", file=sys.stderr
        )
        return 2
    if args.gateways < 1 or args.mailboxes < 0 or args.duration <= 0:
        print("gatehouse sim: --gateways and --duration must be positive, --mailboxes at least 0", file=sys.stderr)
        return 2
    total = args.gateways * args.mailboxes
    if any(n > total for n, _ in args.pin + args.enter_pin):
        print(f"gatehouse sim: a MAILBOX of --pin/--enter-pin is above {total} (gateways x mailboxes)", file=sys.stderr)
        return 2
    base, ssl_ctx = endpoints(args, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    gateways: list[LockGateway] = []
    mailboxes: list[Mailbox] = []
    keypad: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ACK_TIMEOUT_S + 5)) as session:
            mailboxes = await _setup(session, args, base, ssl_ctx, gateways)
        print(f"{len(gateways)} gateway(s), {len(mailboxes)} mailbox(es) online over mqtt"
              f"{' (tls)' if ssl_ctx else ''}", file=sys.stderr)  # fmt: skip
        for number, pin in args.enter_pin:
            m = mailboxes[number - 1]
            keypad.append(f"keypad: mailbox {number} pin {pin} -> {await m.gateway.enter_pin(m.channel_id, pin)}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        await asyncio.sleep(ERRORS_GRACE_S)
    except (SetupError, aiohttp.ClientError, OSError, MqttError, TimeoutError) as exc:
        print(f"gatehouse sim: setup failed: {str(exc) or repr(exc)}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        dropped = sum(not g.connected for g in gateways)
        await asyncio.gather(*(g.close() for g in gateways))

    answered = sum((g.answered for g in gateways), Counter[str]())
    events = sum((g.events for g in gateways), Counter[str]())
    refused = sum(g.refused for g in gateways)
    print(f"gateways {len(gateways)}, mailboxes {len(mailboxes)}, transport mqtt{'+tls' if ssl_ctx else ''}")
    print("commands answered: " + " ".join(f"{k}={v}" for k, v in sorted(answered.items())))
    print("events sent: " + " ".join(f"{k}={v}" for k, v in sorted(events.items())))
    print("\n".join(keypad) if keypad else "keypad: (none)")
    print("pins held: " + ", ".join(f"mailbox {m.number}: {len(m.gateway.held_pins(m.channel_id))}" for m in mailboxes))
    print(f"refused {refused}, dropped {dropped}, interrupted {'yes' if stop.is_set() else 'no'}")
    return 0 if not refused and not dropped else 1
