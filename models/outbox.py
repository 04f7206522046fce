"""Outgoing mail and SMS: every message is a row here first, then delivered (or only logged)."""

from tortoise import fields
from tortoise.models import Model

CHANNELS = ("mail", "sms")
# pending: waiting for (another) delivery attempt; sent: the SMTP server or SMS provider accepted it;
# logged: no transport is configured, so the outbox and the log are where it went;
# failed: refused for good (e.g. every recipient refused with a 5xx), never retried.
STATES = ("pending", "sent", "logged", "failed")


class OutboxMessage(Model):
    id = fields.BigIntField(primary_key=True)
    channel = fields.CharField(max_length=8)
    recipient = fields.CharField(max_length=320, index=True)
    subject = fields.CharField(max_length=255, default="")
    body = fields.TextField()
    state = fields.CharField(max_length=8)
    attempts = fields.IntField(default=0)
    last_error = fields.CharField(max_length=500, default="")
    created = fields.DatetimeField(auto_now_add=True)
    next_attempt_at = fields.DatetimeField(null=True)
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox"
        indexes = (("state", "next_attempt_at"),)
