"""A session: what the broker keeps for one client id, connected or not [MQTT-3.1.2-4]."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from handlers.envelope import Identity

if TYPE_CHECKING:
    from broker.connection import Connection


@dataclass(slots=True, eq=False)
class Session:
    """Subscriptions live in the fan-out's trie and queued messages in its outbox, both by client id."""

    client_id: str
    identity: Identity | None
    persistent: bool  # clean_session=0: outlives its connection (and a restart), until it expires
    connection: Connection | None = None
    # QoS 2 messages received and handled, PUBREC sent, PUBREL not yet received.
    inflight_in: set[int] = field(default_factory=set)
    expiry: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        return self.connection is not None
