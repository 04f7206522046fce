"""The outbox: every mail and SMS is a row first; a background sender delivers it with retries.

A flow calls `send_mail` / `send_sms` (handlers/mail.py, handlers/sms.py), which only writes the
row, so a mail server that is down never fails or slows the request that caused the message. The
sender delivers due rows through the channel's transport, and a failure that may pass is tried
again after a growing wait. Rows are the queue: a restart picks up whatever is still pending, and
with several processes on one database a conditional update makes each attempt belong to one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from handlers.errors import InvalidPayload
from models.outbox import CHANNELS, OutboxMessage

log = logging.getLogger(__name__)

BATCH = 100  # rows looked at per pass; the next pass starts at once when a pass was full


class DeliveryError(Exception):
    """A transport could not deliver. A `permanent` one (the address is refused for good) is not retried."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


class Transport(Protocol):
    """Delivers one message or raises DeliveryError: an SMTP client, an SMS provider adapter."""

    async def deliver(self, message: OutboxMessage) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait after the n-th failed attempt: initial x factor^(n-1), at most `maximum` seconds."""

    initial: float = 10.0
    factor: float = 2.0
    maximum: float = 3600.0

    def delay(self, attempt: int) -> float:
        return min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))


def _clean(value: str, what: str, max_length: int) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise InvalidPayload(f"{what} must be one line", code="invalid_recipient")
    if not value and what == "recipient":
        raise InvalidPayload("recipient is empty", code="invalid_recipient")
    return value[:max_length]


class Outbox:
    """Queues messages and delivers them in the background through each channel's transport.

    A channel without a transport (the embedded default) keeps its messages in the table, state
    `logged`, and writes them to the log, so a developer can read an activation key without a
    mail server.
    """

    def __init__(
        self, transports: dict[str, Transport] | None = None, backoff: Backoff = Backoff(), poll_seconds: float = 30.0
    ) -> None:
        self.transports = dict(transports or {})
        self.backoff = backoff
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def put(self, channel: str, recipient: str, subject: str, body: str) -> OutboxMessage:
        """Queue one message (it is committed with the caller's transaction, if any) and return its row."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        recipient = _clean(recipient.strip(), "recipient", 320)
        subject = _clean(subject, "subject", 255)
        now = datetime.now(UTC)
        if channel not in self.transports:
            message = await OutboxMessage.create(
                channel=channel, recipient=recipient, subject=subject, body=body, state="logged", sent_at=now
            )
            log.info("outbox %s #%s to %s (no %s transport configured): %s\n%s",
                     channel, message.id, recipient, channel, subject, body)  # fmt: skip
            return message
        message = await OutboxMessage.create(
            channel=channel, recipient=recipient, subject=subject, body=body, state="pending", next_attempt_at=now
        )
        log.info("outbox %s #%s to %s queued: %s", channel, message.id, recipient, subject)
        self._wake.set()
        return message

    def start(self) -> None:
        """Run the sender (only needed when some channel has a transport)."""
        if self.transports and self._task is None:
            self._task = asyncio.create_task(self._run(), name="gatehouse.outbox-sender")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                full = await self.deliver_due() >= BATCH
                wait = 0.0 if full else await self._seconds_to_next()
            except Exception:
                log.exception("outbox sender: pass failed; trying again in %ss", self.poll_seconds)
                wait = self.poll_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def deliver_due(self) -> int:
        """One pass: try every due message once; returns how many were tried."""
        now = datetime.now(UTC)
        due = (
            await OutboxMessage.filter(state="pending", next_attempt_at__lte=now, channel__in=list(self.transports))
            .order_by("next_attempt_at", "id")
            .limit(BATCH)
        )
        for message in due:
            await self._attempt(message)
        return len(due)

    async def _attempt(self, message: OutboxMessage) -> None:
        attempt = message.attempts + 1
        retry_at = datetime.now(UTC) + timedelta(seconds=self.backoff.delay(attempt))
        # Claim the attempt and schedule the next one in one conditional update: of two senders
        # (processes) only one wins, and if this one dies mid-send the message is retried anyway.
        won = await OutboxMessage.filter(id=message.id, state="pending", attempts=message.attempts).update(
            attempts=attempt, next_attempt_at=retry_at
        )
        if not won:
            return
        try:
            await self.transports[message.channel].deliver(message)
        except DeliveryError as exc:
            reason = str(exc)[:500]
            if exc.permanent:
                await OutboxMessage.filter(id=message.id).update(
                    state="failed", last_error=reason, next_attempt_at=None
                )
                log.warning("outbox %s #%s to %s refused for good: %s",
                            message.channel, message.id, message.recipient, reason)  # fmt: skip
            else:
                await OutboxMessage.filter(id=message.id).update(last_error=reason)
                log.warning("outbox %s #%s to %s: attempt %d failed (%s); next at %s",
                            message.channel, message.id, message.recipient, attempt, reason,
                            retry_at.isoformat(timespec="seconds"))  # fmt: skip
            return
        await OutboxMessage.filter(id=message.id).update(
            state="sent", sent_at=datetime.now(UTC), last_error="", next_attempt_at=None
        )
        log.info("outbox %s #%s to %s sent (attempt %d)", message.channel, message.id, message.recipient, attempt)

    async def _seconds_to_next(self) -> float:
        first = (
            await OutboxMessage.filter(state="pending", channel__in=list(self.transports))
            .order_by("next_attempt_at")
            .first()
        )
        if first is None or first.next_attempt_at is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, (first.next_attempt_at - datetime.now(UTC)).total_seconds()))


def message_view(message: OutboxMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "channel": message.channel,
        "to": message.recipient,
        "subject": message.subject,
        "body": message.body,
        "state": message.state,
        "attempts": message.attempts,
        "last_error": message.last_error,
        "created": message.created.isoformat(),
        "sent_at": message.sent_at.isoformat() if message.sent_at else None,
        "next_attempt_at": message.next_attempt_at.isoformat() if message.next_attempt_at else None,
    }


async def list_messages(recipient: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """What was sent (or is waiting), newest first; `recipient` matches the address exactly, any case."""
    query = OutboxMessage.all()
    if recipient:
        query = query.filter(recipient__iexact=recipient.strip())
    return [message_view(m) for m in await query.order_by("-created", "-id").limit(limit)]
