"""Persistent MQTT sessions (clean_session=0): subscriptions and undelivered QoS 1/2 messages."""

from tortoise import fields
from tortoise.models import Model


class MqttSession(Model):
    client_id = fields.CharField(max_length=255, primary_key=True)
    identity = fields.JSONField(null=True)  # who authenticated: kind, username, device_id, owner_id
    subscriptions = fields.JSONField(default=dict)  # filter -> granted qos
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "mqtt_sessions"


class MqttQueuedMessage(Model):
    id = fields.BigIntField(primary_key=True, generated=False)
    client_id = fields.CharField(max_length=255, index=True)
    topic = fields.CharField(max_length=1024)
    payload = fields.BinaryField()
    qos = fields.SmallIntField()
    retain = fields.BooleanField(default=False)

    class Meta:
        table = "mqtt_queued_messages"
