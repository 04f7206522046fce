"""Topic ACL: who may publish, subscribe and receive where. Pure functions, no amqtt."""

from __future__ import annotations

from broker.topics import valid_topic_name
from handlers.envelope import Identity

RESERVED_ROOTS = frozenset({"devices", "provisioning", "channels"})


def owns_client_id(identity: Identity, client_id: str) -> bool:
    """A device uses its username as client id, or its username, "-" and anything: no device can
    hold (and lock out) a client id another device will use."""
    if identity.kind != "device" or not identity.username:
        return True
    return client_id == identity.username or client_id.startswith(identity.username + "-")


def own_prefix(identity: Identity, client_id: str) -> str | None:
    if identity.kind == "device":
        return f"devices/{identity.username}/"
    if identity.kind == "provision":
        # The client id becomes a topic level: with "+" or "#" in it the own prefix would be a
        # filter reaching every provisioning client, with "/" it would nest under another's.
        # No prefix: such a client may use no topic at all.
        if not client_id or any(c in client_id for c in "+#/"):
            return None
        return f"provisioning/{client_id}/"
    return None


def _channel(identity: Identity, topic: str, section: str | None) -> bool:
    """An IoTLock channel topic (or filter) of the gateway's: `channels/<cid>/messages/...` with `cid`
    one of its channels, literally (a wildcard there would reach other channels); `section`: the
    level after `messages` must be this one (a gateway publishes only under `res`)."""
    if not identity.channels:
        return False
    levels = topic.split("/")
    if len(levels) < 4 or levels[0] != "channels" or levels[1] not in identity.channels or levels[2] != "messages":
        return False
    return section is None or (levels[3] == section and len(levels) >= 5 and all(levels[4:]))


def _reserved(topic: str) -> bool:
    return topic.split("/", 1)[0] in RESERVED_ROOTS


def topic_name_valid(topic: str) -> bool:
    """A topic name a client may publish to (or put in a will): valid (§4.7) and not `$SYS`."""
    return valid_topic_name(topic) and not _broker_own(topic)


def _broker_own(topic: str) -> bool:
    # "$SYS" is the broker's namespace; other "$" topics are ordinary names that wildcard-first
    # filters do not match (§4.7.2), as the Paho interoperability tests expect.
    return topic == "$SYS" or topic.startswith("$SYS/")


def may_publish(identity: Identity, client_id: str, topic: str) -> bool:
    # Will topics pass through here too: a will on "$SYS/..." or on a wildcard must not pass.
    if not topic_name_valid(topic):
        return False
    prefix = own_prefix(identity, client_id)
    if prefix is not None:
        # Presence is the broker's: only it writes devices/<username>/status (a device could
        # otherwise leave a retained "online" behind it). A Gateway Lite's fingerprint list is the
        # server's too: the gateway reads its owner's list, it must not write one of its own.
        if identity.kind == "device" and (
            topic in (prefix + "status", prefix + "fingerprints") or topic.startswith(prefix + "fingerprints/")
        ):
            return False
        return (topic.startswith(prefix) and len(topic) > len(prefix)) or _channel(identity, topic, "res")
    if identity.kind == "anonymous":
        return not _reserved(topic)
    return False


def may_subscribe(identity: Identity, client_id: str, topic_filter: str) -> bool:
    prefix = own_prefix(identity, client_id)
    if prefix is not None:
        # The literal prefix must come before any wildcard, so no filter reaches another device.
        head = topic_filter[: len(prefix)]
        return (head == prefix and len(topic_filter) > len(prefix)) or _channel(identity, topic_filter, None)
    if identity.kind == "anonymous":
        # Wildcard filters such as '#' are allowed; may_receive keeps reserved topics out of them.
        return not _reserved(topic_filter)
    return False


def may_receive(identity: Identity, client_id: str, topic: str) -> bool:
    prefix = own_prefix(identity, client_id)
    if prefix is not None:
        return topic.startswith(prefix) or _channel(identity, topic, None)
    if identity.kind == "anonymous":
        return not _reserved(topic)
    return False
