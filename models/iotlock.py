"""IoTLock (spec/iotlock.md): accounts shared by members, gateways (things with a channel), mailboxes
(channels connected to a gateway), PINs, the commands sent to gateways and each mailbox's history."""

from tortoise import fields
from tortoise.models import Model

COMMAND_STATUSES = ("pending", "delivered", "acknowledged", "failed", "expired")
OPEN_STATUSES = ("pending", "delivered")  # not answered yet, not expired


class LockAccount(Model):
    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    name = fields.CharField(max_length=200)

    class Meta:
        table = "iotlock_accounts"


class LockMember(Model):
    """A user is a member of at most one account, and members have equal control."""

    id = fields.IntField(primary_key=True)
    account = fields.ForeignKeyField("models.LockAccount", related_name="members", on_delete=fields.CASCADE)
    user = fields.OneToOneField("models.User", related_name="iotlock_member", on_delete=fields.CASCADE)
    joined = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "iotlock_members"


class LockGateway(Model):
    """A thing (its device row: kind lock_gateway, username = thing id) and its own channel."""

    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    account = fields.ForeignKeyField("models.LockAccount", related_name="gateways", on_delete=fields.CASCADE)
    # Deleted once a removed gateway answered DESTRUCT (or it expired): the login ends, the record stays.
    device = fields.OneToOneField("models.Device", related_name="lock_gateway", null=True, on_delete=fields.SET_NULL)
    thing_id = fields.CharField(max_length=36, unique=True)  # the device's username: its MQTT login
    channel_id = fields.CharField(max_length=36, unique=True)
    name = fields.CharField(max_length=200)
    public_key = fields.CharField(max_length=2000, default="")
    # DELETE sent DESTRUCT: gone from the API, the thing stays until the gateway answered or it expired.
    removed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "iotlock_gateways"


class Mailbox(Model):
    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    gateway = fields.ForeignKeyField("models.LockGateway", related_name="mailboxes", on_delete=fields.CASCADE)
    channel_id = fields.CharField(max_length=36, unique=True)
    name = fields.CharField(max_length=200)
    public_key = fields.CharField(max_length=2000)

    class Meta:
        table = "iotlock_mailboxes"


class LockPin(Model):
    """A PIN: a keyed digest (finds the same PIN twice) and a sealed copy (for the UNAUTH pack)."""

    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    mailbox = fields.ForeignKeyField("models.Mailbox", related_name="pins", on_delete=fields.CASCADE)
    pin_hash = fields.CharField(max_length=64)
    pin_sealed = fields.CharField(max_length=200)

    class Meta:
        table = "iotlock_pins"
        unique_together = (("mailbox", "pin_hash"),)


class LockCommand(Model):
    id = fields.CharField(max_length=16, primary_key=True)  # URL-safe: a topic level
    account = fields.ForeignKeyField("models.LockAccount", related_name="commands", on_delete=fields.CASCADE)
    gateway = fields.ForeignKeyField("models.LockGateway", related_name="commands", on_delete=fields.CASCADE)
    mailbox = fields.ForeignKeyField("models.Mailbox", related_name="commands", null=True, on_delete=fields.SET_NULL)
    pin_id = fields.UUIDField(null=True)  # AUTH / UNAUTH: which PIN (the row may be gone)
    channel_id = fields.CharField(max_length=36)
    action = fields.CharField(max_length=16)
    pack = fields.JSONField()  # as sent, a PIN's value left out
    status = fields.CharField(max_length=16, default="pending")
    answer = fields.JSONField(null=True)
    reason = fields.CharField(max_length=500, null=True)
    created_at = fields.DatetimeField()
    delivered_at = fields.DatetimeField(null=True)
    answered_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField()

    class Meta:
        table = "iotlock_commands"
        indexes = (("status", "expires_at"),)


class LockHistory(Model):
    """A mailbox's history: commands sent, their outcomes, events its gateway reported (a gateway's own
    events have no mailbox)."""

    id = fields.BigIntField(primary_key=True)
    gateway = fields.ForeignKeyField("models.LockGateway", related_name="history", on_delete=fields.CASCADE)
    mailbox = fields.ForeignKeyField("models.Mailbox", related_name="history", null=True, on_delete=fields.CASCADE)
    at = fields.DatetimeField()
    kind = fields.CharField(max_length=8)  # command, outcome, event
    name = fields.CharField(max_length=16)
    command_id = fields.CharField(max_length=16, null=True)
    status = fields.CharField(max_length=16, null=True)
    detail = fields.JSONField(default=dict)

    class Meta:
        table = "iotlock_history"
        indexes = (("mailbox_id", "id"),)
