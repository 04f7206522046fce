"""Topic ACL: who may publish, subscribe and receive where. Pure functions, no amqtt."""

from __future__ import annotations

from handlers.envelope import Identity

RESERVED_ROOTS = frozenset({"devices", "provisioning", "channels"})


def own_prefix(identity: Identity, client_id: str) -> str | None:
    if identity.kind == "device":
        return f"devices/{identity.username}/"
    if identity.kind == "provision":
        return f"provisioning/{client_id}/"
    return None


def _reserved(topic: str) -> bool:
    return topic.split("/", 1)[0] in RESERVED_ROOTS


def may_publish(identity: Identity, client_id: str, topic: str) -> bool:
    prefix = own_prefix(identity, client_id)
    if prefix is not None:
        return topic.startswith(prefix) and len(topic) > len(prefix)
    if identity.kind == "anonymous":
        return not _reserved(topic)
    return False


def may_subscribe(identity: Identity, client_id: str, topic_filter: str) -> bool:
    prefix = own_prefix(identity, client_id)
    if prefix is not None:
        # The literal prefix must come before any wildcard, so no filter reaches another device.
        head = topic_filter[: len(prefix)]
        return head == prefix and len(topic_filter) > len(prefix)
    if identity.kind == "user":
        return any(topic_filter.startswith(f"devices/{u}/") for u in identity_devices(identity))
    if identity.kind == "anonymous":
        # Wildcard filters such as '#' are allowed; may_receive keeps reserved topics out of them.
        return not _reserved(topic_filter)
    return False


def may_receive(identity: Identity, client_id: str, topic: str) -> bool:
    prefix = own_prefix(identity, client_id)
    if prefix is not None:
        return topic.startswith(prefix)
    if identity.kind == "user":
        return any(topic.startswith(f"devices/{u}/") for u in identity_devices(identity))
    if identity.kind == "anonymous":
        return not _reserved(topic)
    return False


def identity_devices(identity: Identity) -> tuple[str, ...]:
    # Users (WebSocket + JWT) are not admitted yet; they will carry their devices' usernames.
    return ()
