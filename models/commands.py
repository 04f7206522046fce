"""Cloud-to-device commands: one row per request, answered at most once by its device."""

from tortoise import fields
from tortoise.models import Model

COMMAND_STATUSES = ("pending", "ok", "error")  # "expired" is derived when read, never stored


class Command(Model):
    id = fields.BigIntField(primary_key=True)
    req_id = fields.CharField(max_length=32, unique=True)
    device = fields.ForeignKeyField("models.Device", related_name="commands", on_delete=fields.CASCADE)
    payload = fields.JSONField()
    status = fields.CharField(max_length=8, default="pending")
    result = fields.JSONField(null=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    answered_at = fields.DatetimeField(null=True)

    class Meta:
        table = "commands"
        indexes = (("device_id", "id"),)
