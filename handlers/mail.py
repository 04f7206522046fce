"""Mail: `send_mail` queues a message in the outbox; `SmtpTransport` delivers it (aiosmtplib)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib

from handlers.context import Context
from handlers.outbox import DeliveryError
from models.outbox import OutboxMessage


async def send_mail(ctx: Context, to: str, subject: str, body: str) -> None:
    """Queue a plain-text mail. Never waits for (or fails because of) the mail server."""
    await ctx.outbox.put("mail", to, subject, body)


@dataclass(frozen=True, slots=True)
class SmtpTransport:
    """One SMTP session per message, to a relay (mail.smtp_* settings)."""

    host: str
    port: int = 587
    username: str = ""
    password: str = ""
    starttls: bool | None = None  # None: when the server offers it
    tls: bool = False
    sender: str = "Gatehouse <gatehouse@localhost>"
    timeout: float = 30.0

    def compose(self, message: OutboxMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.recipient
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(message.created.timestamp(), usegmt=True)
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "localhost"
        # The same id on every attempt, so a receiver can drop a copy a retry sent twice.
        mail["Message-ID"] = make_msgid(idstring=f"outbox-{message.id}", domain=domain)
        mail.set_content(message.body)
        return mail

    async def deliver(self, message: OutboxMessage) -> None:
        try:
            mail = self.compose(message)
        except (ValueError, TypeError) as exc:  # a header the email package refuses
            raise DeliveryError(f"cannot compose: {exc}", permanent=True) from exc
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.host,
                port=self.port,
                username=self.username or None,
                password=self.password or None,
                start_tls=False if self.tls else self.starttls,
                use_tls=self.tls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # 5xx for every recipient: the address will not become deliverable by waiting.
            permanent = all(r.code >= 500 for r in exc.recipients)
            raise DeliveryError(f"recipient refused: {exc.recipients[0]}", permanent=permanent) from exc
        except aiosmtplib.SMTPException as exc:
            # Connection, TLS, authentication, sender refused: the relay or our configuration, which
            # can be fixed; retry.
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
