"""Tenants and access: partners, their customers, and user groups (name + permission set)."""

from tortoise import fields
from tortoise.models import Model


class Partner(Model):
    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    modified = fields.DatetimeField(auto_now=True)
    name = fields.CharField(max_length=200)
    is_gateway_lite_provider = fields.BooleanField(default=False)

    class Meta:
        table = "partners"


class Customer(Model):
    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    modified = fields.DatetimeField(auto_now=True)
    name = fields.CharField(max_length=200)
    partner = fields.ForeignKeyField("models.Partner", related_name="customers", on_delete=fields.RESTRICT)

    class Meta:
        table = "customers"


class UserGroup(Model):
    """A named permission set. Owned by a partner or a customer (whose users it may be given to),
    or by neither (a gooee group)."""

    id = fields.UUIDField(primary_key=True)
    created = fields.DatetimeField(auto_now_add=True)
    modified = fields.DatetimeField(auto_now=True)
    name = fields.CharField(max_length=200)
    permissions = fields.JSONField(default=list)  # sorted permission codenames
    partner = fields.ForeignKeyField("models.Partner", related_name="user_groups", null=True, on_delete=fields.CASCADE)
    customer = fields.ForeignKeyField(
        "models.Customer", related_name="user_groups", null=True, on_delete=fields.CASCADE
    )

    class Meta:
        table = "user_groups"
