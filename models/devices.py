"""The device registry: every device has a unique MQTT username and a hashed credential."""

from tortoise import fields
from tortoise.models import Model

DEVICE_KINDS = ("esp32", "gateway_lite", "accessory", "lock_gateway", "mailbox")


class Device(Model):
    id = fields.IntField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    kind = fields.CharField(max_length=16, default="esp32")
    name = fields.CharField(max_length=200)
    location = fields.CharField(max_length=200, default="")
    owner = fields.ForeignKeyField("models.User", related_name="devices", on_delete=fields.CASCADE)
    # The owner's tenant, copied at creation: partner and customer users see their tenant's devices.
    tenant_partner = fields.ForeignKeyField(
        "models.Partner", related_name="devices", null=True, on_delete=fields.RESTRICT
    )
    tenant_customer = fields.ForeignKeyField(
        "models.Customer", related_name="devices", null=True, on_delete=fields.RESTRICT
    )
    # Public identifier and MQTT username (ESP32 id, Gateway Lite euid, accessory MAC, lock id).
    username = fields.CharField(max_length=128, unique=True)
    api_key_hash = fields.CharField(max_length=64, null=True, index=True)
    api_key_created_at = fields.DatetimeField(null=True)
    metadata = fields.JSONField(default=dict)
    online = fields.BooleanField(default=False)
    last_seen = fields.DatetimeField(null=True)
    last_payload = fields.JSONField(null=True)
    last_payload_at = fields.DatetimeField(null=True)

    class Meta:
        table = "devices"


class ProvisioningToken(Model):
    id = fields.BigIntField(primary_key=True)
    device = fields.ForeignKeyField("models.Device", related_name="tokens", on_delete=fields.CASCADE)
    token_hash = fields.CharField(max_length=64, unique=True)
    notes = fields.CharField(max_length=500, default="")
    created = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(null=True)
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "provisioning_tokens"


class DeviceClaim(Model):
    id = fields.BigIntField(primary_key=True)
    device = fields.ForeignKeyField("models.Device", related_name="claims", on_delete=fields.CASCADE)
    claimed_at = fields.DatetimeField(auto_now_add=True)
    metadata = fields.JSONField(default=dict)
    source = fields.CharField(max_length=8)  # "http" or "mqtt"
    remote = fields.CharField(max_length=200, default="")

    class Meta:
        table = "device_claims"
