"""Users (spec/users.rst), their refresh tokens and their one-time keys."""

from tortoise import fields
from tortoise.models import Model

ACCOUNT_TYPES = ("gooee", "partner", "customer")
ACCOUNT_STATUSES = ("active", "inactive", "pending", "expired", "transfer")
KEY_PURPOSES = ("activation", "email_change", "password_reset", "two_factor", "two_factor_setup")


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
    # Tenancy: a partner user has `partner`, a customer user `customer`, a gooee user neither.
    partner = fields.ForeignKeyField("models.Partner", related_name="users", null=True, on_delete=fields.RESTRICT)
    customer = fields.ForeignKeyField("models.Customer", related_name="users", null=True, on_delete=fields.RESTRICT)
    user_groups = fields.ManyToManyField("models.UserGroup", related_name="users", through="users_user_groups")
    customer_scopes = fields.ManyToManyField(
        "models.Customer", related_name="scoped_users", through="users_customer_scopes"
    )
    partner_scopes = fields.ManyToManyField(
        "models.Partner", related_name="scoped_users", through="users_partner_scopes"
    )
    is_api_user = fields.BooleanField(default=False, db_default=False)
    last_login = fields.DatetimeField(null=True)
    tags = fields.JSONField(default=list, db_default="[]")
    preferences = fields.JSONField(default=dict, db_default="{}")
    avatar = fields.BinaryField(null=True)  # the decoded image; its type is avatar_type
    avatar_type = fields.CharField(max_length=16, default="", db_default="")
    # Username change in progress (account_status "transfer"): the address being verified.
    pending_username = fields.CharField(max_length=254, null=True)
    # Bumped by every password change: reset tokens made before it are void.
    password_changed = fields.DatetimeField(null=True)
    # Two-factor authentication: the enabled method ("app", "email", "sms") or null, its
    # configuration (phone number), the TOTP secret, and the last TOTP step used (no replay).
    two_factor_method = fields.CharField(max_length=8, null=True)
    two_factor_config = fields.JSONField(default=dict, db_default="{}")
    two_factor_secret = fields.CharField(max_length=64, default="", db_default="")
    two_factor_last_step = fields.BigIntField(default=0, db_default=0)

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


class UserKey(Model):
    """A one-time key mailed to a user: activation, email change, password reset, or a 2FA code
    (setup or login). Stored hashed; `used_at` is set by one conditional update, so a key works once
    even under concurrency. `data` carries what the key is for (the new username, the 2FA method)."""

    id = fields.BigIntField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="keys", on_delete=fields.CASCADE)
    purpose = fields.CharField(max_length=16)
    key_hash = fields.CharField(max_length=64, unique=True)
    data = fields.JSONField(default=dict)
    created = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "user_keys"
        indexes = (("user_id", "purpose"),)
