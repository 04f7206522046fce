"""The embedded MQTT broker: amqtt underneath, our auth, ACL and pipeline bridge on top."""
