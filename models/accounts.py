"""Users and their refresh tokens. Grows into spec/users.rst (customers, partners, groups)."""

from tortoise import fields
from tortoise.models import Model

ACCOUNT_TYPES = ("gooee", "partner", "customer")
ACCOUNT_STATUSES = ("active", "inactive", "pending", "expired", "transfer")


class User(Model):
    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    modified = fields.DatetimeField(auto_now=True)
    username = fields.CharField(max_length=254, unique=True)
    password_hash = fields.CharField(max_length=255, default="")
    account_type = fields.CharField(max_length=16)
    account_status = fields.CharField(max_length=16, default="inactive")
    account_status_updated = fields.DatetimeField(null=True)
    first_name = fields.CharField(max_length=30, default="")
    last_name = fields.CharField(max_length=30, default="")
    phone_number = fields.CharField(max_length=20, default="")

    class Meta:
        table = "users"


class RefreshToken(Model):
    id = fields.BigIntField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="refresh_tokens", on_delete=fields.CASCADE)
    token_hash = fields.CharField(max_length=64, unique=True)
    created = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "refresh_tokens"
