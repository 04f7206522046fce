from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='MqttQueuedMessage',
            fields=[
                ('id', fields.BigIntField(primary_key=True, generated=False, unique=True, db_index=True)),
                ('client_id', fields.CharField(db_index=True, max_length=255)),
                ('topic', fields.CharField(max_length=1024)),
                ('payload', fields.BinaryField()),
                ('qos', fields.SmallIntField()),
                ('retain', fields.BooleanField(default=False)),
            ],
            options={'table': 'mqtt_queued_messages', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MqttSession',
            fields=[
                ('client_id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=255)),
                ('identity', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('subscriptions', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'mqtt_sessions', 'app': 'models', 'pk_attr': 'client_id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='User',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('modified', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('username', fields.CharField(unique=True, max_length=254)),
                ('password_hash', fields.CharField(default='', max_length=255)),
                ('account_type', fields.CharField(max_length=16)),
                ('account_status', fields.CharField(default='inactive', max_length=16)),
                ('account_status_updated', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('first_name', fields.CharField(default='', max_length=30)),
                ('last_name', fields.CharField(default='', max_length=30)),
                ('phone_number', fields.CharField(default='', max_length=20)),
            ],
            options={'table': 'users', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Device',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('kind', fields.CharField(default='esp32', max_length=16)),
                ('name', fields.CharField(max_length=200)),
                ('location', fields.CharField(default='', max_length=200)),
                ('owner', fields.ForeignKeyField('models.User', source_field='owner_id', db_constraint=True, to_field='id', related_name='devices', on_delete=OnDelete.CASCADE)),
                ('username', fields.CharField(unique=True, max_length=128)),
                ('api_key_hash', fields.CharField(null=True, db_index=True, max_length=64)),
                ('api_key_created_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('metadata', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('online', fields.BooleanField(default=False)),
                ('last_seen', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_payload', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('last_payload_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'devices', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Command',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('req_id', fields.CharField(unique=True, max_length=32)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='commands', on_delete=OnDelete.CASCADE)),
                ('payload', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharField(default='pending', max_length=8)),
                ('result', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('answered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'commands', 'app': 'models', 'indexes': [Index(fields=['device_id', 'id'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DeviceClaim',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='claims', on_delete=OnDelete.CASCADE)),
                ('claimed_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('metadata', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('source', fields.CharField(max_length=8)),
                ('remote', fields.CharField(default='', max_length=200)),
            ],
            options={'table': 'device_claims', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ProvisioningToken',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='tokens', on_delete=OnDelete.CASCADE)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('notes', fields.CharField(default='', max_length=500)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'provisioning_tokens', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RefreshToken',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='refresh_tokens', on_delete=OnDelete.CASCADE)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'refresh_tokens', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Telemetry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.ForeignKeyField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='telemetry', on_delete=OnDelete.CASCADE)),
                ('received_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('payload', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('source', fields.CharField(max_length=8)),
            ],
            options={'table': 'telemetry', 'app': 'models', 'indexes': [Index(fields=['device_id', 'id'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]
