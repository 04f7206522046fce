"""The outbox against a real SMTP server (aiosmtpd): delivery, retries with backoff, restart, SMS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from handlers.context import Context
from handlers.errors import InvalidPayload
from handlers.mail import SmtpTransport, send_mail
from handlers.outbox import Backoff, DeliveryError, Outbox, list_messages
from handlers.sms import SmsTransport, load_provider, send_sms
from handlers.telemetry_writer import TelemetryWriter
from models.db import close_db, init_db
from models.outbox import OutboxMessage
from tests.smtp import SmtpSink
from tests.support import eventually, free_port

FAST = Backoff(initial=0.1, factor=2, maximum=0.4)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[None]:
    conn = await init_db(db_url)
    try:
        yield
    finally:
        await close_db(conn)


def smtp_outbox(port: int, backoff: Backoff = FAST) -> Outbox:
    transport = SmtpTransport("127.0.0.1", port, sender="Gatehouse <noreply@gatehouse.test>", timeout=5)
    return Outbox({"mail": transport}, backoff, poll_seconds=0.2)


def context(outbox: Outbox) -> Context:
    return Context(jwt_secret="x" * 32, writer=TelemetryWriter(), outbox=outbox)


async def state_of(message_id: int) -> OutboxMessage:
    return await OutboxMessage.get(id=message_id)


async def marked_sent(address: str) -> None:
    """The sink has the message once its DATA is in; the sender records it as sent only after the
    server's answer: wait for that before stopping the sender (a stop mid-send leaves it pending)."""

    async def sent() -> bool:
        return (await OutboxMessage.get(recipient=address)).state == "sent"

    await eventually(sent)


async def test_mail_is_delivered_over_smtp(db: None, smtp: SmtpSink) -> None:
    outbox = smtp_outbox(smtp.port)
    outbox.start()
    try:
        await send_mail(context(outbox), "alice@example.com", "Activate your account", "Your key: k3y-123\n")
        (got,) = await smtp.wait_for("alice@example.com")
        await marked_sent("alice@example.com")
    finally:
        await outbox.stop()
    assert got.subject == "Activate your account"
    assert got.body.strip() == "Your key: k3y-123"
    assert got.message["From"] == "Gatehouse <noreply@gatehouse.test>"
    assert got.message["To"] == "alice@example.com"
    assert got.message["Message-ID"].endswith("@gatehouse.test>")
    (row,) = await OutboxMessage.all()
    assert (row.state, row.attempts, row.last_error) == ("sent", 1, "")
    assert row.sent_at is not None and row.next_attempt_at is None


async def test_smtp_down_then_up_is_delivered_after_retry_and_never_blocks(db: None) -> None:
    sink = SmtpSink()  # its port is free: nothing listens yet
    outbox = smtp_outbox(sink.port)
    outbox.start()
    try:
        started = time.monotonic()
        await send_mail(context(outbox), "bob@example.com", "Reset", "link")
        assert time.monotonic() - started < 1.0  # queued, not sent, by the caller
        (row,) = await OutboxMessage.all()

        async def failed_once() -> OutboxMessage | None:
            current = await state_of(row.id)
            return current if current.attempts >= 1 and current.last_error else None

        failed = await eventually(failed_once)
        assert failed.state == "pending" and "connect" in failed.last_error.lower()
        sink.start()
        try:
            (got,) = await sink.wait_for("bob@example.com")
            await marked_sent("bob@example.com")
        finally:
            sink.stop()
    finally:
        await outbox.stop()
    assert got.subject == "Reset"
    delivered = await state_of(row.id)
    assert delivered.state == "sent" and delivered.attempts >= 2


async def test_restart_picks_up_pending_mail(db: None) -> None:
    sink = SmtpSink()
    first = smtp_outbox(sink.port)
    first.start()
    await send_mail(context(first), "carol@example.com", "Invitation", "come in")

    async def tried() -> bool:
        return (await OutboxMessage.get(recipient="carol@example.com")).attempts >= 1

    await eventually(tried)
    await first.stop()  # the process goes away with the message undelivered
    sink.start()
    try:
        second = smtp_outbox(sink.port)  # a new process: nothing in memory, only the rows
        second.start()
        try:
            (got,) = await sink.wait_for("carol@example.com")
            await marked_sent("carol@example.com")
        finally:
            await second.stop()
    finally:
        sink.stop()
    assert got.subject == "Invitation"
    assert (await OutboxMessage.get(recipient="carol@example.com")).state == "sent"


async def test_a_refused_recipient_fails_for_good_and_the_rest_go_out(db: None, smtp: SmtpSink) -> None:
    smtp.refused.add("nobody@example.com")
    outbox = smtp_outbox(smtp.port)
    ctx = context(outbox)
    await send_mail(ctx, "nobody@example.com", "Hi", "x")
    await send_mail(ctx, "dave@example.com", "Hi", "y")
    assert await outbox.deliver_due() == 2
    refused = await OutboxMessage.get(recipient="nobody@example.com")
    assert refused.state == "failed" and "550" in refused.last_error and refused.attempts == 1
    assert (await OutboxMessage.get(recipient="dave@example.com")).state == "sent"
    assert await outbox.deliver_due() == 0  # a failed message is not tried again
    assert len(smtp.to("dave@example.com")) == 1 and not smtp.to("nobody@example.com")


async def test_two_senders_deliver_a_message_once(db: None, smtp: SmtpSink) -> None:
    """Several processes on one database: each attempt belongs to one of them."""
    a, b = smtp_outbox(smtp.port), smtp_outbox(smtp.port)
    for i in range(10):
        await send_mail(context(a), f"u{i}@example.com", "Once", str(i))
    tried = await asyncio.gather(a.deliver_due(), b.deliver_due())
    assert sum(tried) >= 10
    assert sorted(r for m in smtp.messages for r in m.rcpt_tos) == sorted(f"u{i}@example.com" for i in range(10))
    assert await OutboxMessage.filter(state="sent", attempts=1).count() == 10


async def test_without_transport_messages_are_logged(db: None, caplog: pytest.LogCaptureFixture) -> None:
    ctx = context(Outbox())
    caplog.set_level("INFO", logger="handlers.outbox")
    await send_mail(ctx, "erin@example.com", "Activate", "key: abc123")
    await send_sms(ctx, "+15550100", "code 123456")
    mail, sms = await OutboxMessage.all().order_by("id")
    assert (mail.channel, mail.state, mail.body) == ("mail", "logged", "key: abc123")
    assert (sms.channel, sms.state, sms.recipient, sms.body) == ("sms", "logged", "+15550100", "code 123456")
    assert "erin@example.com" in caplog.text and "key: abc123" in caplog.text and "code 123456" in caplog.text


async def test_header_injection_is_refused(db: None) -> None:
    ctx = context(Outbox())
    with pytest.raises(InvalidPayload):
        await send_mail(ctx, "a@example.com\r\nBcc: all@example.com", "Hi", "x")
    with pytest.raises(InvalidPayload):
        await send_mail(ctx, "a@example.com", "Hi\nBcc: all@example.com", "x")
    assert await OutboxMessage.all().count() == 0


class FakeSms:
    """A provider outside the machine, played: down for the first `failures` sends."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, str]] = []

    async def send(self, to: str, text: str) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError("provider answered 503")
        self.sent.append((to, text))


async def test_sms_goes_through_its_provider_with_retries(db: None) -> None:
    provider = FakeSms(failures=2)
    outbox = Outbox({"sms": SmsTransport(provider)}, FAST, poll_seconds=0.2)
    outbox.start()
    try:
        await send_sms(context(outbox), "+15550101", "Your code is 654321")

        async def sent() -> list[tuple[str, str]]:
            return provider.sent

        assert await eventually(sent) == [("+15550101", "Your code is 654321")]
    finally:
        await outbox.stop()
    row = await OutboxMessage.get(recipient="+15550101")
    assert (row.state, row.attempts, row.last_error) == ("sent", 3, "")


def test_sms_provider_is_loaded_by_name() -> None:
    provider = load_provider("tests.handlers.test_outbox:FakeSms", {"failures": 1})
    # pytest may have imported this file under another module name: compare by name.
    assert type(provider).__qualname__ == "FakeSms" and provider.failures == 1  # type: ignore[attr-defined]
    for bad in ("nocolon", "tests.handlers.test_outbox:Nope", "no.such.module:X", "tests.handlers.test_outbox:FAST"):
        with pytest.raises(ValueError, match=r"sms\.provider"):
            load_provider(bad, {})


def test_backoff_grows_to_its_maximum() -> None:
    backoff = Backoff(initial=10, factor=2, maximum=60)
    assert [backoff.delay(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]


async def test_list_messages_newest_first_and_by_recipient(db: None) -> None:
    ctx = context(Outbox())
    for subject in ("one", "two", "three"):
        await send_mail(ctx, "Frank@Example.com", subject, "b")
    await send_mail(ctx, "grace@example.com", "other", "b")
    assert [m["subject"] for m in await list_messages()] == ["other", "three", "two", "one"]
    assert [m["subject"] for m in await list_messages("frank@example.com", limit=2)] == ["three", "two"]
    assert await list_messages("nobody@example.com") == []


async def test_unreachable_server_does_not_stop_the_sender(db: None) -> None:
    """A port with nothing on it: every pass fails quickly, the message stays pending, backoff grows."""
    outbox = smtp_outbox(free_port(), Backoff(initial=0.05, factor=2, maximum=0.2))
    outbox.start()
    try:
        await send_mail(context(outbox), "henry@example.com", "Hi", "x")

        async def retried() -> bool:
            return (await OutboxMessage.get(recipient="henry@example.com")).attempts >= 3

        await eventually(retried, timeout=15)  # a loaded machine: liveness, not timing
    finally:
        await outbox.stop()
    row = await OutboxMessage.get(recipient="henry@example.com")
    assert row.state == "pending" and row.next_attempt_at is not None
