"""Fan-out: subscriptions, retained messages and each session's outbox, indexed.

Replaces amqtt 0.12.1's global broadcast queue, which tests every subscription filter (and
formats a debug string per filter) for every publish, and whose deliveries are unbounded tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from broker import acl, metrics
from broker.delivery import Outbox, Outgoing
from broker.session import Session
from broker.sessions import SessionStore
from broker.topics import RetainedIndex, SubscriptionIndex

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Retained:
    payload: bytes
    qos: int
    bounded: bool = False  # a client's: counts towards its device's retained bound


class Fanout:
    def __init__(
        self,
        store: SessionStore,
        *,
        max_queued: int,
        max_inflight: int,
        on_overflow: Callable[[str], None],
        max_queued_bytes: int = 1 << 62,
        max_retained_per_device: int = 1 << 62,
        max_retained_bytes_per_device: int = 1 << 62,
    ) -> None:
        self.subs = SubscriptionIndex()
        self.retained: dict[str, Retained] = {}
        self._retained_index = RetainedIndex()
        self.outboxes: dict[str, Outbox] = {}
        self.subscribers: dict[str, Session] = {}
        self.store = store
        self.max_queued = max_queued
        self.max_inflight = max_inflight
        self.max_queued_bytes = max_queued_bytes
        self.max_retained_per_device = max_retained_per_device
        self.max_retained_bytes_per_device = max_retained_bytes_per_device
        self._device_retained: dict[str, list[int]] = {}  # username -> [count, bytes] under devices/<username>/
        self.retained_bytes = 0
        self._on_overflow = on_overflow
        # Told the topic of every QoS 1/2 message a client acknowledged under `channels/` (IoTLock
        # commands: "delivered").
        self.on_delivered: Callable[[str], None] | None = None
        metrics.queued.set_function(lambda: sum(len(o) for o in self.outboxes.values()))
        metrics.queued_bytes.set_function(lambda: sum(o.bytes for o in self.outboxes.values()))
        metrics.retained.set_function(lambda: len(self.retained))
        metrics.retained_bytes.set_function(lambda: self.retained_bytes)
        metrics.sessions.set_function(lambda: len(self.subscribers))

    # --- sessions -----------------------------------------------------------------------------

    def outbox(self, client_id: str) -> Outbox:
        box = self.outboxes.get(client_id)
        if box is None:
            box = self.outboxes[client_id] = Outbox(
                client_id,
                max_queued=self.max_queued,
                max_inflight=self.max_inflight,
                max_queued_bytes=self.max_queued_bytes,
                on_overflow=lambda b: self._on_overflow(b.client_id),
                on_acked=self._acked,
            )
        return box

    def _acked(self, msg: Outgoing) -> None:
        self.store.acked(msg)
        if self.on_delivered is not None and msg.topic.startswith("channels/"):
            self.on_delivered(msg.topic)

    def withdraw(self, client_id: str, topic: str) -> None:
        box = self.outboxes.get(client_id)
        if box is not None:
            for msg in box.withdraw(topic):
                self.store.acked(msg)

    def register(self, sub: Session) -> None:
        self.subscribers[sub.client_id] = sub

    def forget(self, client_id: str, *, purge: bool = False) -> None:
        """The session ends for good (clean session, a clean CONNECT replacing it; with `purge`,
        its device was deleted)."""
        sub = self.subscribers.pop(client_id, None)
        self.subs.remove_client(client_id)
        box = self.outboxes.pop(client_id, None)
        if box is not None:
            box.detach()
        if purge or (sub is not None and sub.persistent):
            self.store.forget(client_id)

    def clear_retained(self, prefix: str) -> None:
        for topic in [t for t in self.retained if t.startswith(prefix)]:
            self.retain(topic, b"", 0)
        if prefix.startswith("devices/"):
            self._device_retained.pop(prefix.split("/")[1], None)

    def disconnected(self, client_id: str) -> None:
        """The session's connection ended: a clean session ends with it, a persistent one keeps
        its QoS 1/2 messages [MQTT-3.1.2-5]."""
        sub = self.subscribers.get(client_id)
        box = self.outboxes.get(client_id)
        if box is not None:
            box.detach()
        if sub is None or not sub.persistent:
            self.forget(client_id)
        elif box is not None:
            box.discard_qos0()

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> None:
        self.subs.add(topic_filter, client_id, qos)
        self.persist(client_id)

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        found = self.subs.remove(topic_filter, client_id)
        if found:
            self.persist(client_id)
        return found

    def persist(self, client_id: str) -> None:
        sub = self.subscribers.get(client_id)
        if sub is not None and sub.persistent:
            self.store.save(client_id, sub.identity, self.subs.filters_of(client_id))

    # --- messages -----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int | None, *, only: str | None = None) -> int:
        """Hand a message to every matching subscriber (or only to client `only`), at the lower
        of the publish and subscription QoS (`None`: the subscription's); returns how many got it."""
        delivered = 0
        for client_id, sub_qos in self.subs.match(topic).items():
            if only is not None and client_id != only:
                continue
            sub = self.subscribers.get(client_id)
            if sub is None or sub.identity is None or not acl.may_receive(sub.identity, client_id, topic):
                continue
            out_qos = sub_qos if qos is None else min(qos, sub_qos)
            if not sub.connected and (out_qos == 0 or not sub.persistent):
                continue
            if self._queue(sub, Outgoing(topic, payload, out_qos)):
                delivered += 1
        return delivered

    def _queue(self, sub: Session, msg: Outgoing) -> bool:
        if not self.outbox(sub.client_id).put(msg):
            return False
        if sub.persistent and msg.qos > 0:
            self.store.enqueue(sub.client_id, msg)
        return True

    def retain(self, topic: str, payload: bytes, qos: int, *, bounded: bool = False) -> bool:
        """Store (or, with an empty payload, clear [MQTT-3.3.1-10]) the topic's retained message.

        `bounded` (a client's publish or will): refused past the device's bound in count or bytes
        under `devices/<username>/`, so one device cannot fill the broker's memory; never kept under
        `provisioning/` (anyone may connect as `provision`)."""
        if bounded and payload and topic.startswith("provisioning/"):
            metrics.retained_refused.inc()
            return False
        old = self.retained.get(topic)
        old_size = len(topic) + len(old.payload) if old is not None else 0
        new_size = len(topic) + len(payload) if payload else 0
        usage = self._usage(topic)
        was_bounded = old is not None and old.bounded
        if bounded and usage is not None and payload:
            count = usage[0] + (0 if was_bounded else 1)
            size = usage[1] - (old_size if was_bounded else 0) + new_size
            if count > self.max_retained_per_device or size > self.max_retained_bytes_per_device:
                metrics.retained_refused.inc()
                log.warning("retained message on %s not kept: the device is at its retained bound", topic)
                return False
        if old is not None:
            self.retained_bytes -= old_size
            if was_bounded:
                self._account(usage, -1, -old_size)
        if not payload:
            if self.retained.pop(topic, None) is not None:
                self._retained_index.remove(topic)
            return True
        if old is None:
            self._retained_index.add(topic)
        self.retained[topic] = Retained(payload, qos, bounded and usage is not None)
        self.retained_bytes += new_size
        if bounded:
            self._account(usage, 1, new_size)
        return True

    def _usage(self, topic: str) -> list[int] | None:
        root, _, rest = topic.partition("/")
        if root != "devices" or not rest:
            return None
        username = rest.split("/", 1)[0]
        return self._device_retained.setdefault(username, [0, 0])

    @staticmethod
    def _account(usage: list[int] | None, count: int, size: int) -> None:
        if usage is not None:
            usage[0] += count
            usage[1] += size

    def send_retained(self, client_id: str, topic_filter: str, qos: int) -> None:
        """On SUBSCRIBE: the retained messages the filter matches and the subscriber may read."""
        sub = self.subscribers.get(client_id)
        if sub is None or sub.identity is None:
            return
        for topic in self._retained_index.match(topic_filter):
            if acl.may_receive(sub.identity, client_id, topic):
                kept = self.retained[topic]
                self._queue(sub, Outgoing(topic, kept.payload, min(qos, kept.qos), retain=True))
