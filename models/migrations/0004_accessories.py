from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_users')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Accessory',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('device', fields.OneToOneField('models.Device', source_field='device_id', db_constraint=True, to_field='id', related_name='accessory', on_delete=OnDelete.CASCADE)),
                ('password_hash', fields.CharField(max_length=200)),
                ('hardware_model', fields.CharField(max_length=256)),
                ('firmware_version', fields.CharField(max_length=64)),
                ('settings_key', fields.CharField(max_length=256)),
                ('token_nonce', fields.CharField(max_length=32)),
                ('created', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('modified', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'accessories', 'app': 'models', 'pk_attr': 'id', 'table_description': 'What an accessory adds to its registry row (`Device.username` is its canonical MAC address).'},
            bases=['Model'],
        ),
    ]
