"""The topic ACL as pure functions: who may publish, subscribe and receive where."""

from __future__ import annotations

import pytest

from broker.acl import may_publish, may_receive, may_subscribe, own_prefix, owns_client_id, topic_name_valid
from handlers.envelope import Identity

DEVICE = Identity("device", "dev1", 1, "owner")
PROVISION = Identity("provision", "provision")
ANONYMOUS = Identity("anonymous")
USER = Identity("user", "alice@example.com")
CID = "esp32-setup-1"


def test_own_prefix() -> None:
    assert own_prefix(DEVICE, "any-client-id") == "devices/dev1/"
    assert own_prefix(PROVISION, CID) == f"provisioning/{CID}/"
    assert own_prefix(PROVISION, "+") is None
    assert own_prefix(PROVISION, "") is None
    assert own_prefix(ANONYMOUS, CID) is None
    assert own_prefix(USER, CID) is None


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("devices/dev1/telemetry", True),
        ("devices/dev1/status", False),  # presence is the broker's alone
        ("devices/dev1/fingerprints", False),  # a Gateway Lite's list is the server's to write
        ("devices/dev1/fingerprints/resync", False),
        ("devices/dev1/fingerprints2", True),
        ("devices/dev1/commands/res/42", True),
        ("devices/dev2/telemetry", False),
        ("devices/dev10/telemetry", False),  # a longer username sharing the prefix
        ("devices/dev/telemetry", False),
        ("devices/dev1", False),
        ("devices/dev1/", False),
        ("provisioning/dev1/claim", False),
        ("channels/1/messages/res", False),
        ("test/anything", False),
        ("devices/dev1/+", False),  # not a topic name: wildcards never name a topic (wills included)
        ("devices/dev1/#", False),
    ],
)
def test_device_publish(topic: str, allowed: bool) -> None:
    assert may_publish(DEVICE, "c", topic) is allowed


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("devices/dev1/#", True),
        ("devices/dev1/+", True),
        ("devices/dev1/commands/req/+", True),
        ("devices/dev1/status", True),
        ("devices/dev1/+/res/#", True),
        ("devices/dev2/telemetry", False),
        ("devices/dev10/#", False),
        ("devices/+/telemetry", False),
        ("devices/#", False),
        ("devices/dev1", False),
        ("devices/dev1/", False),
        ("#", False),
        ("+/+/telemetry", False),
        ("+/dev1/telemetry", False),
        ("provisioning/#", False),
        ("test/#", False),
    ],
)
def test_device_subscribe(topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(DEVICE, "c", topic_filter) is allowed


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("devices/dev1/commands/req/7", True),
        ("devices/dev1/status", True),
        ("devices/dev2/status", False),
        ("devices/dev10/status", False),
        ("provisioning/c/accepted", False),
        ("test/x", False),
    ],
)
def test_device_receive(topic: str, allowed: bool) -> None:
    assert may_receive(DEVICE, "c", topic) is allowed


def test_device_rights_do_not_depend_on_client_id() -> None:
    for client_id in ("c", "dev2", "", "+"):
        assert may_publish(DEVICE, client_id, "devices/dev1/telemetry")
        assert not may_publish(DEVICE, client_id, "devices/dev2/telemetry")
        assert not may_subscribe(DEVICE, client_id, "devices/+/telemetry")


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        (f"provisioning/{CID}/claim", True),
        ("provisioning/other-client/claim", False),
        (f"provisioning/{CID}", False),
        (f"provisioning/{CID}/", False),
        ("devices/dev1/telemetry", False),
        ("test/x", False),
    ],
)
def test_provision_publish(topic: str, allowed: bool) -> None:
    assert may_publish(PROVISION, CID, topic) is allowed


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        (f"provisioning/{CID}/+", True),
        (f"provisioning/{CID}/#", True),
        (f"provisioning/{CID}/accepted", True),
        ("provisioning/other-client/accepted", False),
        ("provisioning/+/accepted", False),
        ("provisioning/#", False),
        ("#", False),
        ("devices/#", False),
    ],
)
def test_provision_subscribe(topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(PROVISION, CID, topic_filter) is allowed


def test_provision_receive() -> None:
    assert may_receive(PROVISION, CID, f"provisioning/{CID}/accepted")
    assert not may_receive(PROVISION, CID, "provisioning/other-client/accepted")
    assert not may_receive(PROVISION, CID, "devices/dev1/status")


@pytest.mark.parametrize("client_id", ["+", "#", "a/b", "a+", "x#"])
def test_provision_client_id_with_wildcards_or_separators_gets_nothing(client_id: str) -> None:
    # A client id is a topic level for the provision user: "+" would make "provisioning/+/#" its
    # own prefix, a filter that reaches every other provisioning client.
    assert not may_subscribe(PROVISION, client_id, f"provisioning/{client_id}/#")
    assert not may_subscribe(PROVISION, client_id, "provisioning/+/accepted")
    assert not may_publish(PROVISION, client_id, f"provisioning/{client_id}/claim")
    assert not may_receive(PROVISION, client_id, "provisioning/victim/accepted")


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("test/x", True),
        ("test/a/b/c", True),
        ("sensors/42", True),
        ("device/x", True),  # only the exact reserved roots are reserved
        ("devices/dev1/telemetry", False),
        ("devices", False),
        ("provisioning/c/claim", False),
        ("channels/1/messages/req", False),
        ("test/+", False),  # a will topic is a topic name: no wildcards
        ("$SYS/broker/uptime", False),  # $SYS is the broker's own (spoofable through a will)
        ("$TopicA/B", True),  # other $ topics are ordinary names (Paho test_dollar_topics)
        ("", False),
    ],
)
def test_anonymous_publish(topic: str, allowed: bool) -> None:
    assert may_publish(ANONYMOUS, "c", topic) is allowed


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("test/#", True),
        ("test/+/r", True),
        ("#", True),  # allowed; may_receive keeps reserved topics out of it
        ("+/+/telemetry", True),
        ("devices/#", False),
        ("devices/dev1/status", False),
        ("provisioning/#", False),
        ("channels/#", False),
        ("channels/+/messages/req", False),
    ],
)
def test_anonymous_subscribe(topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(ANONYMOUS, "c", topic_filter) is allowed


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("test/x", True),
        ("sensors/1", True),
        ("devices/dev1/telemetry", False),
        ("devices/dev1/status", False),
        ("provisioning/c/accepted", False),
        ("channels/1/messages/req", False),
    ],
)
def test_anonymous_receive(topic: str, allowed: bool) -> None:
    assert may_receive(ANONYMOUS, "c", topic) is allowed


@pytest.mark.parametrize(
    ("topic", "valid"),
    [
        ("a", True),
        ("a/b/c", True),
        ("a//b", True),
        ("", False),
        ("a/+", False),
        ("#", False),
        ("$SYS/x", False),
        ("$SYS", False),
        ("$x/y", True),
    ],
)
def test_topic_name_valid(topic: str, valid: bool) -> None:
    assert topic_name_valid(topic) is valid


def test_users_and_unknown_kinds_get_nothing_yet() -> None:
    odd = Identity("robot")  # type: ignore[arg-type]
    for identity in (USER, odd):
        assert not may_publish(identity, "c", "devices/dev1/telemetry")
        assert not may_publish(identity, "c", "test/x")
        assert not may_subscribe(identity, "c", "devices/dev1/#")
        assert not may_subscribe(identity, "c", "#")
        assert not may_receive(identity, "c", "devices/dev1/status")
        assert not may_receive(identity, "c", "test/x")


@pytest.mark.parametrize(
    ("client_id", "owned"),
    [("dev1", True), ("dev1-a", True), ("dev1-", True), ("dev10", False), ("x-dev1", False), ("", False)],
)
def test_a_device_owns_its_username_and_its_username_dash_anything(client_id: str, owned: bool) -> None:
    assert owns_client_id(DEVICE, client_id) is owned
    assert owns_client_id(Identity("anonymous"), client_id)


GATEWAY = Identity("device", "thing-1", 7, "owner", ("chan-a", "chan-b"))
CHANNEL_TOPICS = [
    # (topic, may publish, may receive)
    ("channels/chan-a/messages/res/cmd1", True, True),
    ("channels/chan-b/messages/res/events", True, True),
    ("channels/chan-a/messages/req/cmd1", False, True),  # commands are the server's to send
    ("channels/chan-a/messages/res", False, True),
    ("channels/chan-a/messages/res/", False, True),
    ("channels/chan-a/other/res/x", False, False),
    ("channels/chan-c/messages/res/cmd1", False, False),  # another account's channel
    ("channels/chan-c/messages/req/cmd1", False, False),
    ("channels/chan-a", False, False),
    ("devices/thing-1/telemetry", True, True),
    ("devices/thing-2/telemetry", False, False),
]


@pytest.mark.parametrize(("topic", "publish", "receive"), CHANNEL_TOPICS)
def test_a_lock_gateway_reaches_exactly_its_channels(topic: str, publish: bool, receive: bool) -> None:
    assert may_publish(GATEWAY, "thing-1", topic) is publish
    assert may_receive(GATEWAY, "thing-1", topic) is receive


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("channels/chan-a/messages/req/+", True),
        ("channels/chan-b/messages/#", True),
        ("channels/chan-a/messages/+/+", True),
        ("channels/+/messages/req/+", False),
        ("channels/#", False),
        ("channels/chan-a/#", False),
        ("channels/chan-a/messages", False),
        ("channels/chan-c/messages/req/+", False),
        ("+/chan-a/messages/req/+", False),
        ("#", False),
    ],
)
def test_a_lock_gateway_subscribes_only_under_its_channels(topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(GATEWAY, "thing-1", topic_filter) is allowed


@pytest.mark.parametrize("who", [DEVICE, ANONYMOUS, PROVISION, USER])
def test_nobody_else_reaches_channels(who: Identity) -> None:
    assert not may_subscribe(who, "c1", "channels/chan-a/messages/req/+")
    assert not may_publish(who, "c1", "channels/chan-a/messages/res/x")
    assert not may_receive(who, "c1", "channels/chan-a/messages/req/x")


def test_channels_are_not_part_of_who_a_gateway_is() -> None:
    assert Identity("device", "thing-1", 7, "owner", ()) == GATEWAY
