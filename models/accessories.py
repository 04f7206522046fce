"""Hardware accessories (spec/hardware-accessory.md): a device of kind "accessory", named by its MAC."""

from tortoise import fields
from tortoise.models import Model


class Accessory(Model):
    """What an accessory adds to its registry row (`Device.username` is its canonical MAC address)."""

    id = fields.IntField(primary_key=True)
    device = fields.OneToOneField("models.Device", related_name="accessory", on_delete=fields.CASCADE)
    password_hash = fields.CharField(max_length=200)  # argon2: the accessory's login and MQTT password
    hardware_model = fields.CharField(max_length=256)  # immutable once registered
    firmware_version = fields.CharField(max_length=64)
    settings_key = fields.CharField(max_length=256)
    # Carried in the accessory's access tokens: a deleted and re-registered MAC gets a new one, so
    # tokens issued before do not work for the new registration.
    token_nonce = fields.CharField(max_length=32)
    created = fields.DatetimeField(auto_now_add=True)
    modified = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "accessories"
