"""Persistent MQTT sessions on disk: written in the background, in order, one transaction per batch."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from tortoise.transactions import in_transaction

from broker.delivery import Outgoing
from handlers.envelope import Identity
from handlers.secrets import seal_bytes, unseal_bytes
from models.sessions import MqttQueuedMessage, MqttSession

log = logging.getLogger(__name__)
SEALED = "mqtt-queue"  # the sealing purpose of queued channel messages


@dataclass
class StoredSession:
    client_id: str
    identity: Identity | None
    subscriptions: dict[str, int]
    messages: list[Outgoing] = field(default_factory=list)


class SessionStore:
    """Keeps what a `clean_session=0` client is owed across a restart of `gatehouse serve`:
    its subscriptions and its undelivered QoS 1/2 messages (amqtt keeps them in memory only)."""

    def __init__(self, secret: str = "") -> None:
        # With a secret, messages under `channels/` (IoTLock commands: a PIN's AUTH carries it) are
        # stored sealed (AES-GCM under a key derived from it) and opened when loaded.
        self._secret = secret
        self._ops: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> list[StoredSession]:
        sessions = {
            s.client_id: StoredSession(s.client_id, _identity(s.identity), dict(s.subscriptions))
            for s in await MqttSession.all()
        }
        top = 0
        for row in await MqttQueuedMessage.all().order_by("id"):
            top = max(top, row.id)
            stored = sessions.get(row.client_id)
            payload = self._open(row.topic, bytes(row.payload))
            if payload is None:
                self._ops.put_nowait(("acked", row.id))  # deleted once the store runs
            elif stored is not None:
                stored.messages.append(Outgoing(row.topic, payload, row.qos, row.retain, store_id=row.id))
        self._ids = itertools.count(top + 1)
        return list(sessions.values())

    def _sealed(self, topic: str) -> bool:
        return bool(self._secret) and topic.startswith("channels/")

    def _open(self, topic: str, payload: bytes) -> bytes | None:
        if not self._sealed(topic):
            return payload
        try:
            return unseal_bytes(self._secret, SEALED, payload)
        except (InvalidTag, ValueError):
            log.warning(
                "a queued message on %s was sealed under another key (auth.jwt_secret changed?): dropped", topic
            )
            return None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gatehouse.session-store")

    async def stop(self) -> None:
        if self._task is None:
            return
        await self._ops.join()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    def save(self, client_id: str, identity: Identity | None, subscriptions: dict[str, int]) -> None:
        self._ops.put_nowait(("save", (client_id, asdict(identity) if identity else None, dict(subscriptions))))

    def forget(self, client_id: str) -> None:
        self._ops.put_nowait(("forget", client_id))

    def enqueue(self, client_id: str, msg: Outgoing) -> None:
        msg.store_id = next(self._ids)
        self._ops.put_nowait(("enqueue", (client_id, msg)))

    def acked(self, msg: Outgoing) -> None:
        if msg.store_id is not None:
            self._ops.put_nowait(("acked", msg.store_id))

    async def _run(self) -> None:
        while True:
            batch = [await self._ops.get()]
            while not self._ops.empty() and len(batch) < 500:
                batch.append(self._ops.get_nowait())
            try:
                async with in_transaction():
                    for op, arg in batch:
                        await self._apply(op, arg)
            except Exception as exc:
                # Rolled back as a whole: apply the operations one by one so that one that
                # fails (or a busy database) loses only itself, in order.
                log.warning("session store batch of %d failed (%s); retrying one by one", len(batch), exc)
                for op, arg in batch:
                    try:
                        await self._apply(op, arg)
                    except Exception:
                        log.exception("session store: %s for %s not written", op, _client_of(op, arg))
            finally:
                for _ in batch:
                    self._ops.task_done()

    async def _apply(self, op: str, arg: Any) -> None:
        # Each operation is idempotent (upsert, delete, insert of a fresh id), so a retry after a
        # rolled-back batch is safe.
        if op == "save":
            client_id, identity, subs = arg
            await MqttSession.update_or_create({"identity": identity, "subscriptions": subs}, client_id=client_id)
        elif op == "forget":
            await MqttSession.filter(client_id=arg).delete()
            await MqttQueuedMessage.filter(client_id=arg).delete()
        elif op == "enqueue":
            client_id, msg = arg
            await MqttQueuedMessage.create(
                id=msg.store_id,
                client_id=client_id,
                topic=msg.topic,
                payload=seal_bytes(self._secret, SEALED, msg.payload) if self._sealed(msg.topic) else msg.payload,
                qos=msg.qos,
                retain=msg.retain,
            )
        elif op == "acked":
            await MqttQueuedMessage.filter(id=arg).delete()


def _identity(stored: dict[str, Any] | None) -> Identity | None:
    if not stored:
        return None
    return Identity(**{**stored, "channels": tuple(stored.get("channels", ()))})  # JSON made it a list


def _client_of(op: str, arg: Any) -> str:
    if op in ("forget",):
        return str(arg)
    if op == "acked":
        return f"message {arg}"
    return str(arg[0])
