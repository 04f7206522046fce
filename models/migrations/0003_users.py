from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_outbox')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Partner',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('modified', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('name', fields.CharField(max_length=200)),
                ('is_gateway_lite_provider', fields.BooleanField(default=False)),
            ],
            options={'table': 'partners', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Customer',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('modified', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('name', fields.CharField(max_length=200)),
                ('partner', fields.ForeignKeyField('models.Partner', source_field='partner_id', db_constraint=True, to_field='id', related_name='customers', on_delete=OnDelete.RESTRICT)),
            ],
            options={'table': 'customers', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='UserGroup',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('modified', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('name', fields.CharField(max_length=200)),
                ('permissions', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('partner', fields.ForeignKeyField('models.Partner', source_field='partner_id', null=True, db_constraint=True, to_field='id', related_name='user_groups', on_delete=OnDelete.CASCADE)),
                ('customer', fields.ForeignKeyField('models.Customer', source_field='customer_id', null=True, db_constraint=True, to_field='id', related_name='user_groups', on_delete=OnDelete.CASCADE)),
            ],
            options={'table': 'user_groups', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A named permission set. Owned by a partner or a customer (whose users it may be given to),'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='UserKey',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='keys', on_delete=OnDelete.CASCADE)),
                ('purpose', fields.CharField(max_length=16)),
                ('key_hash', fields.CharField(unique=True, max_length=64)),
                ('data', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'user_keys', 'app': 'models', 'indexes': [Index(fields=['user_id', 'purpose'])], 'pk_attr': 'id', 'table_description': 'A one-time key mailed to a user: activation, email change, password reset, or a 2FA code'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Device',
            name='tenant_customer',
            field=fields.ForeignKeyField('models.Customer', source_field='tenant_customer_id', null=True, db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.RESTRICT),
        ),
        ops.AddField(
            model_name='Device',
            name='tenant_partner',
            field=fields.ForeignKeyField('models.Partner', source_field='tenant_partner_id', null=True, db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.RESTRICT),
        ),
        ops.AddField(
            model_name='User',
            name='avatar',
            field=fields.BinaryField(null=True),
        ),
        ops.AddField(
            model_name='User',
            name='avatar_type',
            field=fields.CharField(default='', db_default='', max_length=16),
        ),
        ops.AddField(
            model_name='User',
            name='customer',
            field=fields.ForeignKeyField('models.Customer', source_field='customer_id', null=True, db_constraint=True, to_field='id', related_name='users', on_delete=OnDelete.RESTRICT),
        ),
        ops.AddField(
            model_name='User',
            name='customer_scopes',
            field=fields.ManyToManyField('models.Customer', unique=True, db_constraint=True, through='users_customer_scopes', forward_key='customer_id', backward_key='users_id', related_name='scoped_users', on_delete=OnDelete.CASCADE),
        ),
        ops.AddField(
            model_name='User',
            name='is_api_user',
            field=fields.BooleanField(default=False, db_default=False),
        ),
        ops.AddField(
            model_name='User',
            name='last_login',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='User',
            name='partner',
            field=fields.ForeignKeyField('models.Partner', source_field='partner_id', null=True, db_constraint=True, to_field='id', related_name='users', on_delete=OnDelete.RESTRICT),
        ),
        ops.AddField(
            model_name='User',
            name='partner_scopes',
            field=fields.ManyToManyField('models.Partner', unique=True, db_constraint=True, through='users_partner_scopes', forward_key='partner_id', backward_key='users_id', related_name='scoped_users', on_delete=OnDelete.CASCADE),
        ),
        ops.AddField(
            model_name='User',
            name='password_changed',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='User',
            name='pending_username',
            field=fields.CharField(null=True, max_length=254),
        ),
        ops.AddField(
            model_name='User',
            name='preferences',
            field=fields.JSONField(default=dict, db_default='{}', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='User',
            name='tags',
            field=fields.JSONField(default=list, db_default='[]', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='User',
            name='two_factor_config',
            field=fields.JSONField(default=dict, db_default='{}', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='User',
            name='two_factor_last_step',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='User',
            name='two_factor_method',
            field=fields.CharField(null=True, max_length=8),
        ),
        ops.AddField(
            model_name='User',
            name='two_factor_secret',
            field=fields.CharField(default='', db_default='', max_length=64),
        ),
        ops.AddField(
            model_name='User',
            name='user_groups',
            field=fields.ManyToManyField('models.UserGroup', unique=True, db_constraint=True, through='users_user_groups', forward_key='usergroup_id', backward_key='users_id', related_name='users', on_delete=OnDelete.CASCADE),
        ),
    ]
