"""Gateway Lite (spec/gateway-lite.rst): products, CSV imports, the gateways, their owners' fingerprints,
and the partners' integration keys."""

from tortoise import fields
from tortoise.models import Model

COMMISSION_STATES = ("inactive", "customer_provisioned")
IMPORT_STATUSES = ("pending", "processing", "completed", "failed")


class IntegrationKey(Model):
    """A Gateway Lite provider's current integration key. The key itself is derived from the server's
    secret and `nonce` (handlers/integration_keys.py); only its digest is stored, for the lookup."""

    id = fields.IntField(primary_key=True)
    partner = fields.OneToOneField("models.Partner", related_name="integration_key", on_delete=fields.CASCADE)
    nonce = fields.CharField(max_length=32)
    key_hash = fields.CharField(max_length=64, unique=True)
    created = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "integration_keys"


class Product(Model):
    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    modified = fields.DatetimeField(auto_now=True)
    name = fields.CharField(max_length=200)
    # The partner whose users see and manage it; none: a gooee product, seen by everyone.
    partner = fields.ForeignKeyField("models.Partner", related_name="products", null=True, on_delete=fields.RESTRICT)

    class Meta:
        table = "products"


class GatewayLiteImport(Model):
    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    modified = fields.DatetimeField(auto_now=True)
    csv_file = fields.CharField(max_length=255)  # the uploaded file's name
    product = fields.ForeignKeyField("models.Product", related_name="imports", on_delete=fields.RESTRICT)
    status = fields.CharField(max_length=16, default="pending")
    customer_scopes = fields.JSONField(default=list)
    partner_scopes = fields.JSONField(default=list)
    error_message = fields.TextField(default="")
    partner = fields.ForeignKeyField("models.Partner", related_name="imports", null=True, on_delete=fields.SET_NULL)
    tags = fields.JSONField(default=list)
    total_rows = fields.IntField(default=0)
    processed_rows = fields.IntField(default=0)
    created_by = fields.ForeignKeyField("models.User", related_name="imports", on_delete=fields.CASCADE)

    class Meta:
        table = "gateway_lite_imports"


class GatewayLite(Model):
    """What a Gateway Lite adds to its registry row (`Device.username` is its euid). While inactive the
    device is owned by whoever imported it; acquiring hands it to the acquiring user and customer."""

    id = fields.IntField(primary_key=True)
    uuid = fields.UUIDField(unique=True)
    device = fields.OneToOneField("models.Device", related_name="gateway_lite", on_delete=fields.CASCADE)
    product = fields.ForeignKeyField("models.Product", related_name="gateways", on_delete=fields.RESTRICT)
    imported = fields.ForeignKeyField(
        "models.GatewayLiteImport", related_name="gateways", null=True, on_delete=fields.SET_NULL
    )
    importer = fields.ForeignKeyField("models.User", related_name="imported_gateways", on_delete=fields.CASCADE)
    importer_partner = fields.ForeignKeyField(
        "models.Partner", related_name="imported_gateways", null=True, on_delete=fields.RESTRICT
    )
    fw_code = fields.CharField(max_length=64)
    nabto_device_id = fields.CharField(max_length=128)
    install_code_hash = fields.CharField(max_length=64)  # HMAC-SHA-256 (server key): its MQTT password
    commission_state = fields.CharField(max_length=24, default="inactive")
    access_secret = fields.CharField(max_length=32, default="")  # the random part of access_url
    acquired_at = fields.DatetimeField(null=True)

    class Meta:
        table = "gateway_lites"


class Fingerprint(Model):
    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    fingerprint = fields.CharField(max_length=32, unique=True)  # 32 hex digits, lower case
    description = fields.CharField(max_length=200, default="")
    user = fields.ForeignKeyField("models.User", related_name="fingerprints", on_delete=fields.CASCADE)

    class Meta:
        table = "fingerprints"
