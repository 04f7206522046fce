"""Broker counters, exposed in the Prometheus text format at GET /metrics."""

from prometheus_client import Counter, Gauge

connections = Gauge("gatehouse_mqtt_connections", "Open MQTT connections")
auth_failures = Counter("gatehouse_mqtt_auth_failures_total", "Refused MQTT CONNECTs")
acl_denials = Counter(
    "gatehouse_mqtt_acl_denials_total", "Publishes, subscriptions and wills refused by the ACL", ["action"]
)
messages_in = Counter("gatehouse_mqtt_messages_in_total", "PUBLISH packets received from clients")
messages_refused = Counter(
    "gatehouse_mqtt_messages_refused_total", "Payloads refused by a handler (answered on the errors topic)"
)
handler_failures = Counter("gatehouse_mqtt_handler_failures_total", "Handler bugs (logged with a stack trace)")
keepalive_expired = Counter("gatehouse_mqtt_keepalive_expired_total", "Connections dropped after keepalive")
messages_out = Counter("gatehouse_mqtt_messages_out_total", "PUBLISH packets sent to clients")
messages_dropped = Counter(
    "gatehouse_mqtt_messages_dropped_total", "Messages dropped because a client's outgoing queue was full"
)
slow_disconnects = Counter(
    "gatehouse_mqtt_slow_subscriber_disconnects_total",
    "Clients disconnected for staying over their outgoing queue limit",
)
malformed_packets = Counter(
    "gatehouse_mqtt_malformed_packets_total", "Connections closed for a packet that breaks MQTT 3.1.1"
)
oversize_packets = Counter("gatehouse_mqtt_oversize_packets_total", "Connections closed for an oversize packet")
queued = Gauge("gatehouse_mqtt_queued_messages", "Messages waiting in client outgoing queues (incl. in flight)")
sessions = Gauge("gatehouse_mqtt_sessions", "Known MQTT sessions (connected and persistent offline)")
connections_refused = Counter(
    "gatehouse_mqtt_connections_refused_total",
    "Admitted CONNECTs refused by a bound (per_identity) or a client id in use (client_id_in_use)",
    ["reason"],
)
retained_refused = Counter(
    "gatehouse_mqtt_retained_refused_total", "Retained messages not kept: the device is at its retained bound"
)
queued_bytes = Gauge("gatehouse_mqtt_queued_bytes", "Bytes waiting in client outgoing queues (incl. in flight)")
retained = Gauge("gatehouse_mqtt_retained_messages", "Retained messages held")
retained_bytes = Gauge("gatehouse_mqtt_retained_bytes", "Bytes of retained messages held")
