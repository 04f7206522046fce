from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0004_accessories')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Fingerprint',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('fingerprint', fields.CharField(unique=True, max_length=32)),
                ('description', fields.CharField(default='', max_length=200)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='fingerprints', on_delete=OnDelete.CASCADE)),
            ],
            options={'table': 'fingerprints', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='IntegrationKey',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('partner', fields.OneToOneField('models.Partner', source_field='partner_id', db_constraint=True, to_field='id', related_name='integration_key', on_delete=OnDelete.CASCADE)),
                ('nonce', fields.CharField(max_length=32)),
                ('key_hash', fields.CharField(unique=True, max_length=64)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'integration_keys', 'app': 'models', 'pk_attr': 'id', 'table_description': "A Gateway Lite provider's current integration key. The key itself is derived from the server's"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Product',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('modified', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('name', fields.CharField(max_length=200)),
                ('partner', fields.ForeignKeyField('models.Partner', source_field='partner_id', null=True, db_constraint=True, to_field='id', related_name='products', on_delete=OnDelete.RESTRICT)),
            ],
            options={'table': 'products', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='GatewayLiteImport',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('modified', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('csv_file', fields.CharField(max_length=255)),
                ('product', fields.ForeignKeyField('models.Product', source_field='product_id', db_constraint=True, to_field='id', related_name='imports', on_delete=OnDelete.RESTRICT)),
                ('status', fields.CharField(default='pending', max_length=16)),
                ('customer_scopes', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('partner_scopes', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('error_message', fields.TextField(default='', unique=False)),
                ('partner', fields.ForeignKeyField('models.Partner', source_field='partner_id', null=True, db_constraint=True, to_field='id', related_name='imports', on_delete=OnDelete.SET_NULL)),
                ('tags', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('total_rows', fields.IntField(default=0)),
                ('processed_rows', fields.IntField(default=0)),
                ('created_by', fields.ForeignKeyField('models.User', source_field='created_by_id', db_constraint=True, to_field='id', related_name='imports', on_delete=OnDelete.CASCADE)),
            ],
            options={'table': 'gateway_lite_imports', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='GatewayLite',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('uuid', fields.UUIDField(unique=True)),
                ('device', fields.OneToOneField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='gateway_lite', on_delete=OnDelete.CASCADE)),
                ('product', fields.ForeignKeyField('models.Product', source_field='product_id', db_constraint=True, to_field='id', related_name='gateways', on_delete=OnDelete.RESTRICT)),
                ('imported', fields.ForeignKeyField('models.GatewayLiteImport', source_field='imported_id', null=True, db_constraint=True, to_field='id', related_name='gateways', on_delete=OnDelete.SET_NULL)),
                ('importer', fields.ForeignKeyField('models.User', source_field='importer_id', db_constraint=True, to_field='id', related_name='imported_gateways', on_delete=OnDelete.CASCADE)),
                ('importer_partner', fields.ForeignKeyField('models.Partner', source_field='importer_partner_id', null=True, db_constraint=True, to_field='id', related_name='imported_gateways', on_delete=OnDelete.RESTRICT)),
                ('fw_code', fields.CharField(max_length=64)),
                ('nabto_device_id', fields.CharField(max_length=128)),
                ('install_code_hash', fields.CharField(max_length=64)),
                ('commission_state', fields.CharField(default='inactive', max_length=24)),
                ('access_secret', fields.CharField(default='', max_length=32)),
                ('acquired_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'gateway_lites', 'app': 'models', 'pk_attr': 'id', 'table_description': 'What a Gateway Lite adds to its registry row (`Device.username` is its euid). While inactive the'},
            bases=['Model'],
        ),
    ]
