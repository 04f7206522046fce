from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0005_gateway_lite')]

    initial = False

    operations = [
        ops.CreateModel(
            name='LockAccount',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('name', fields.CharField(max_length=200)),
            ],
            options={'table': 'iotlock_accounts', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LockGateway',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('account', fields.ForeignKeyField('models.LockAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='gateways', on_delete=OnDelete.CASCADE)),
                ('device', fields.OneToOneField('models.Device', source_field='device_id', null=True, db_constraint=True, to_field='id', related_name='lock_gateway', on_delete=OnDelete.SET_NULL)),
                ('thing_id', fields.CharField(unique=True, max_length=36)),
                ('channel_id', fields.CharField(unique=True, max_length=36)),
                ('name', fields.CharField(max_length=200)),
                ('public_key', fields.CharField(default='', max_length=2000)),
                ('removed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'iotlock_gateways', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A thing (its device row: kind lock_gateway, username = thing id) and its own channel.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LockMember',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account', fields.ForeignKeyField('models.LockAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='members', on_delete=OnDelete.CASCADE)),
                ('user', fields.OneToOneField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='iotlock_member', on_delete=OnDelete.CASCADE)),
                ('joined', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'iotlock_members', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A user is a member of at most one account, and members have equal control.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Mailbox',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('gateway', fields.ForeignKeyField('models.LockGateway', source_field='gateway_id', db_constraint=True, to_field='id', related_name='mailboxes', on_delete=OnDelete.CASCADE)),
                ('channel_id', fields.CharField(unique=True, max_length=36)),
                ('name', fields.CharField(max_length=200)),
                ('public_key', fields.CharField(max_length=2000)),
            ],
            options={'table': 'iotlock_mailboxes', 'app': 'models', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LockCommand',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=16)),
                ('account', fields.ForeignKeyField('models.LockAccount', source_field='account_id', db_constraint=True, to_field='id', related_name='commands', on_delete=OnDelete.CASCADE)),
                ('gateway', fields.ForeignKeyField('models.LockGateway', source_field='gateway_id', db_constraint=True, to_field='id', related_name='commands', on_delete=OnDelete.CASCADE)),
                ('mailbox', fields.ForeignKeyField('models.Mailbox', source_field='mailbox_id', null=True, db_constraint=True, to_field='id', related_name='commands', on_delete=OnDelete.SET_NULL)),
                ('pin_id', fields.UUIDField(null=True)),
                ('channel_id', fields.CharField(max_length=36)),
                ('action', fields.CharField(max_length=16)),
                ('pack', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharField(default='pending', max_length=16)),
                ('answer', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('reason', fields.CharField(null=True, max_length=500)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('delivered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('answered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'iotlock_commands', 'app': 'models', 'indexes': [Index(fields=['status', 'expires_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LockHistory',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('gateway', fields.ForeignKeyField('models.LockGateway', source_field='gateway_id', db_constraint=True, to_field='id', related_name='history', on_delete=OnDelete.CASCADE)),
                ('mailbox', fields.ForeignKeyField('models.Mailbox', source_field='mailbox_id', null=True, db_constraint=True, to_field='id', related_name='history', on_delete=OnDelete.CASCADE)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('kind', fields.CharField(max_length=8)),
                ('name', fields.CharField(max_length=16)),
                ('command_id', fields.CharField(null=True, max_length=16)),
                ('status', fields.CharField(null=True, max_length=16)),
                ('detail', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
            ],
            options={'table': 'iotlock_history', 'app': 'models', 'indexes': [Index(fields=['mailbox_id', 'id'])], 'pk_attr': 'id', 'table_description': "A mailbox's history: commands sent, their outcomes, events its gateway reported (a gateway's own"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LockPin',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('mailbox', fields.ForeignKeyField('models.Mailbox', source_field='mailbox_id', db_constraint=True, to_field='id', related_name='pins', on_delete=OnDelete.CASCADE)),
                ('pin_hash', fields.CharField(max_length=64)),
                ('pin_sealed', fields.CharField(max_length=200)),
            ],
            options={'table': 'iotlock_pins', 'app': 'models', 'unique_together': (('mailbox', 'pin_hash'),), 'pk_attr': 'id', 'table_description': 'A PIN: a keyed digest (finds the same PIN twice) and a sealed copy (for the UNAUTH pack).'},
            bases=['Model'],
        ),
    ]
