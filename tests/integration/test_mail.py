"""Mail through the running server: SMTP delivery, SMTP down then up across a restart, `gatehouse outbox`.

No REST route sends mail yet (the user flows will): these tests queue a message in the server's
database with the handler the flows call, `send_mail`, and the server's sender does the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from handlers.context import Context
from handlers.mail import SmtpTransport, send_mail
from handlers.outbox import Outbox
from handlers.telemetry_writer import TelemetryWriter
from models.db import close_db, init_db
from tests.smtp import SmtpSink
from tests.support import Server, eventually, gatehouse, mail_env, make_server


async def queue_mail(server: Server, to: str, subject: str, body: str, *, smtp: bool = True) -> None:
    """Write a message into the server's outbox the way a flow does: pending (SMTP) or logged (none)."""
    url = server.database_url
    if url.startswith("sqlite://"):
        url += "?busy_timeout=5000"
    db = await init_db(url, upgrade=False)
    try:
        outbox = Outbox({"mail": SmtpTransport("127.0.0.1", 1)} if smtp else {})  # only queues: never started
        await send_mail(Context(jwt_secret="x" * 32, writer=TelemetryWriter(), outbox=outbox), to, subject, body)
    finally:
        await close_db(db)


def outbox_cli(server: Server, *args: str) -> Any:
    done = gatehouse("outbox", *args, data_dir=server.data_dir, env=server.env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


async def test_queued_mail_is_delivered_over_smtp(mail_server: Server, smtpd: SmtpSink) -> None:
    await queue_mail(mail_server, "ivy@example.com", "Welcome to Gatehouse", "Your activation key: AK-1\nBye\n")
    (got,) = await smtpd.wait_for("ivy@example.com")
    assert got.subject == "Welcome to Gatehouse"
    assert got.body.splitlines() == ["Your activation key: AK-1", "Bye"]
    assert got.message["From"] == "Gatehouse <noreply@gatehouse.test>"
    assert got.mail_from == "noreply@gatehouse.test"

    async def sent() -> list[Any]:
        rows = outbox_cli(mail_server, "--to", "ivy@example.com", "--json")
        return rows if rows and rows[0]["state"] == "sent" else []

    (row,) = await eventually(sent, timeout=15)
    assert row["to"] == "ivy@example.com" and row["attempts"] == 1 and row["sent_at"]


async def test_outbox_command_text_json_and_filter(server: Server) -> None:
    """The embedded default: no SMTP server; messages are in the outbox (state logged)."""
    await queue_mail(server, "jack@example.com", "First", "line one\nline two", smtp=False)
    await queue_mail(server, "jack@example.com", "Second", "newer", smtp=False)
    await queue_mail(server, "kate@example.com", "For Kate", "kate's", smtp=False)

    rows = outbox_cli(server, "--json", "--to", "JACK@example.com")
    assert [r["subject"] for r in rows] == ["Second", "First"]  # newest first, address in any case
    assert set(rows[0]) >= {"to", "subject", "body", "created", "state", "channel", "attempts"}
    assert rows[1]["body"] == "line one\nline two" and rows[1]["state"] == "logged"

    text = outbox_cli(server, "--to", "jack@example.com", "--limit", "1")
    assert "to jack@example.com [logged]" in text and "Subject: Second" in text and "    newer" in text
    assert "First" not in text and "kate" not in text.lower()

    everything = outbox_cli(server, "--json", "--limit", "100")
    assert {"jack@example.com", "kate@example.com"} <= {r["to"] for r in everything}
    assert outbox_cli(server, "--to", "nobody@example.com").strip() == "no messages to nobody@example.com"

    bad = gatehouse("outbox", "--limit", "0", data_dir=server.data_dir, env=server.env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--limit: must be at least 1" in bad.stderr


async def test_smtp_down_then_up_across_a_restart_loses_nothing(tmp_path: Path) -> None:
    sink = SmtpSink()  # not listening yet: the mail server is down
    server = make_server(tmp_path, **mail_env(sink.port))
    try:
        await queue_mail(server, "liam@example.com", "Reset your password", "https://x/reset/abc")

        async def failed_attempt() -> list[Any]:
            rows = outbox_cli(server, "--to", "liam@example.com", "--json")
            return rows if rows and rows[0]["attempts"] >= 1 and rows[0]["last_error"] else []

        (row,) = await eventually(failed_attempt, timeout=15)
        assert row["state"] == "pending"
        text = outbox_cli(server, "--to", "liam@example.com")
        assert "[pending," in text and "last error:" in text
        assert server.stop() == 0  # a clean stop with the message still pending
        sink.start()
        server.start()  # the new process finds the pending row and delivers it
        (got,) = await sink.wait_for("liam@example.com")
        assert got.subject == "Reset your password" and "https://x/reset/abc" in got.body
    finally:
        server.stop()
        sink.stop()
    assert "Traceback" not in server.log()
    assert "attempt 1 failed" in server.log()
