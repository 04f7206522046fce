"""SubscriptionIndex (topic-filter trie) against the MQTT 3.1.1 §4.7 rules and a naive reference matcher."""

from __future__ import annotations

import random

import pytest

from broker.topics import RetainedIndex, SubscriptionIndex, valid_filter, valid_topic_name

# (filter, topic, matches) — MQTT 3.1.1 §4.7.1.2, §4.7.1.3, §4.7.2 examples, plus empty-level edge cases.
SPEC_CASES = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/tennis/player1/#", "sport/tennis", False),
    ("sport/#", "sport", True),
    ("sport/#", "sport/", True),
    ("sport/#", "sports", False),
    ("sport/tennis/#", "sport/tennisplayer1", False),
    ("sport/tennis/#", "sport/tennis/player1", True),
    ("#", "sport", True),
    ("#", "/", True),
    ("#", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("sport/+", "sport/tennis/player1", False),
    ("sport/+/player1", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/tennis/player1/ranking", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/+", "/", True),
    ("a/+/b", "a//b", True),
    ("a//b", "a//b", True),
    ("a//b", "a/b", False),
    ("/a", "a", False),
    ("a/b", "a/b/", False),
    ("#", "$SYS/x", False),
    ("#", "$SYS", False),
    ("+", "$SYS", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("+/#", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/+", "$SYS", False),
    ("a/$x", "a/$x", True),
    ("a/+", "a/$x", True),  # the $ rule is about the first level only
    ("a/#", "a/$x/b", True),
]


def reference_match(topic_filter: str, topic: str) -> bool:
    """Obviously-correct matcher for valid filters and topic names."""
    flevels, tlevels = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and flevels[0] in ("+", "#"):
        return False
    for i, level in enumerate(flevels):
        if level == "#":
            return True
        if i >= len(tlevels) or level not in ("+", tlevels[i]):
            return False
    return len(flevels) == len(tlevels)


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), SPEC_CASES)
def test_spec_examples(topic_filter: str, topic: str, expected: bool) -> None:
    index = SubscriptionIndex()
    index.add(topic_filter, "c", 1)
    assert index.match(topic) == ({"c": 1} if expected else {})


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), SPEC_CASES)
def test_reference_matcher_agrees_with_spec(topic_filter: str, topic: str, expected: bool) -> None:
    assert reference_match(topic_filter, topic) is expected


def test_overlapping_filters_deliver_once_at_max_qos() -> None:
    index = SubscriptionIndex()
    index.add("sport/#", "a", 0)
    index.add("sport/+/player1", "a", 2)
    index.add("sport/tennis/player1", "a", 1)
    index.add("#", "a", 0)
    index.add("sport/tennis/+", "b", 1)
    index.add("sport/#", "b", 0)
    index.add("news/#", "c", 2)
    assert index.match("sport/tennis/player1") == {"a": 2, "b": 1}
    assert index.match("sport") == {"a": 0, "b": 0}
    assert index.match("news") == {"a": 0, "c": 2}


def test_add_replaces_qos_of_existing_pair() -> None:
    index = SubscriptionIndex()
    assert index.add("a/+", "c1", 0) is True
    assert index.add("a/+", "c1", 2) is False
    assert index.add("a/+", "c2", 1) is True
    assert len(index) == 2
    assert index.match("a/b") == {"c1": 2, "c2": 1}
    assert index.filters_of("c1") == {"a/+": 2}


def test_remove() -> None:
    index = SubscriptionIndex()
    index.add("a/#", "c1", 1)
    index.add("a/b", "c1", 0)
    index.add("a/b", "c2", 2)
    assert index.remove("a/b", "c1") is True
    assert index.remove("a/b", "c1") is False
    assert index.remove("a/#", "c2") is False
    assert index.remove("x/y", "nobody") is False
    assert len(index) == 2
    assert index.match("a/b") == {"c1": 1, "c2": 2}
    assert index.filters_of("c1") == {"a/#": 1}
    assert index.remove("a/#", "c1") is True
    assert index.match("a/b") == {"c2": 2}
    assert index.filters_of("c1") == {}


def test_filters_of_returns_a_copy() -> None:
    index = SubscriptionIndex()
    index.add("a", "c", 1)
    index.filters_of("c")["b"] = 2
    assert index.filters_of("c") == {"a": 1}
    assert index.filters_of("unknown") == {}


def test_remove_client_only_touches_that_client() -> None:
    index = SubscriptionIndex()
    for f in ("a/+", "a/#", "#", "b//c", "$SYS/#"):
        index.add(f, "c1", 1)
    index.add("a/+", "c2", 0)
    assert sorted(index.remove_client("c1")) == sorted(["a/+", "a/#", "#", "b//c", "$SYS/#"])
    assert index.remove_client("c1") == []
    assert len(index) == 1
    assert index.filters_of("c1") == {}
    assert index.match("a/x") == {"c2": 0}
    assert index.match("b//c") == {}


def test_pruning_leaves_an_empty_root() -> None:
    index = SubscriptionIndex()
    filters = ["a/b/c", "a/+/c", "a/#", "+/+", "#", "/", "a//", "$SYS/monitor/+", "x/y/z/w"]
    for i, f in enumerate(filters):
        index.add(f, f"c{i % 3}", i % 3)
    index.remove("a/b/c", "c0")
    assert "a" in index._root.children  # still used by other filters
    for i, f in enumerate(filters[1:], start=1):
        assert index.remove(f, f"c{i % 3}")
    root = index._root
    assert len(index) == 0
    assert root.children == {} and root.plus is None and root.hash == {} and root.subs == {}
    assert index.match("a/b/c") == {}


def test_partial_pruning_keeps_shared_prefix() -> None:
    index = SubscriptionIndex()
    index.add("a/b/c", "c1", 0)
    index.add("a/b", "c2", 0)
    index.remove("a/b/c", "c1")
    node_b = index._root.children["a"].children["b"]
    assert node_b.children == {}
    assert index.match("a/b") == {"c2": 0}


@pytest.mark.parametrize(
    "weird",
    ["", "/", "//", "#/#", "a/#/b", "a+b/#", "+#", "\0", "a/\ud800", "é/ü/#", "#" * 3, "/".join("+" * 50)],
)
def test_does_not_crash_on_any_string(weird: str) -> None:
    index = SubscriptionIndex()
    assert index.add(weird, "c", 1) is True
    index.match(weird)
    index.match("a/b")
    assert index.filters_of("c") == {weird: 1}
    assert index.remove(weird, "c") is True
    root = index._root
    assert root.children == {} and root.plus is None and root.hash == {} and root.subs == {}


def test_randomized_against_reference() -> None:
    rng = random.Random(1)
    alphabet = ["", "a", "b", "$x"]

    def random_filter() -> str:
        levels = [rng.choice([*alphabet, "+"]) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            levels[-1] = "#"
        return "/".join(levels)

    def random_topic() -> str:
        return "/".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))

    index = SubscriptionIndex()
    subs: dict[tuple[str, str], int] = {}  # (filter, client) -> qos
    for _ in range(600):
        f, client, qos = random_filter(), f"c{rng.randrange(12)}", rng.randrange(3)
        if not valid_filter(f):
            continue
        assert index.add(f, client, qos) is ((f, client) not in subs)
        subs[f, client] = qos
    assert len(index) == len(subs)

    def check(rounds: int) -> None:
        for _ in range(rounds):
            topic = random_topic()
            if not valid_topic_name(topic):
                continue
            expected: dict[str, int] = {}
            for (f, client), qos in subs.items():
                if reference_match(f, topic):
                    expected[client] = max(qos, expected.get(client, -1))
            assert index.match(topic) == expected, topic

    check(1500)
    for key in rng.sample(sorted(subs), len(subs) // 2):
        assert index.remove(*key) is True
        del subs[key]
    for client in ("c0", "c1"):
        removed = index.remove_client(client)
        assert sorted(removed) == sorted(f for f, c in subs if c == client)
        for f in removed:
            del subs[f, client]
    assert len(index) == len(subs)
    for client in {c for _, c in subs}:
        assert index.filters_of(client) == {f: q for (f, c), q in subs.items() if c == client}
    check(1500)
    for f, client in list(subs):
        assert index.remove(f, client) is True
    assert len(index) == 0
    assert index._root.children == {} and index._root.plus is None


@pytest.mark.parametrize(
    ("topic_filter", "ok"),
    [
        ("sport/tennis/player1/#", True),
        ("sport/#", True),
        ("#", True),
        ("+", True),
        ("+/tennis/#", True),
        ("sport/+/player1", True),
        ("/+", True),
        ("/", True),
        ("a//b", True),
        ("$SYS/#", True),
        ("a" * 65535, True),
        ("é" * 32767, True),  # 65534 bytes
        ("", False),
        ("sport/tennis#", False),
        ("sport/tennis/#/ranking", False),
        ("#/", False),
        ("sport+", False),
        ("sport/+x/a", False),
        ("a\0b", False),
        ("a" * 65536, False),
        ("é" * 32768, False),  # 65536 bytes
        ("a/\ud800", False),
    ],
)
def test_valid_filter(topic_filter: str, ok: bool) -> None:
    assert valid_filter(topic_filter) is ok


@pytest.mark.parametrize(
    ("topic", "ok"),
    [
        ("sport/tennis/player1", True),
        ("/", True),
        ("/finance", True),
        ("$SYS/monitor/Clients", True),
        ("a//b", True),
        ("", False),
        ("sport/+", False),
        ("sport/#", False),
        ("a+b", False),
        ("a\0b", False),
        ("a" * 65536, False),
    ],
)
def test_valid_topic_name(topic: str, ok: bool) -> None:
    assert valid_topic_name(topic) is ok


def test_retained_index_matches_like_the_reference() -> None:
    rng = random.Random(7)
    alphabet = ["", "a", "b", "$x"]
    topics = {"/".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(300)}
    index = RetainedIndex()
    for t in topics:
        index.add(t)
    filters = ["#", "+", "+/+", "a/#", "/#", "$x/#", "+/a", "a/+/b", "a", "", "$x/+", "b/#"]
    filters += ["/".join(rng.choice([*alphabet, "+"]) for _ in range(rng.randint(1, 4))) for _ in range(100)]
    for f in filters:
        assert sorted(index.match(f)) == sorted(t for t in topics if reference_match(f, t)), f
    removed = set(rng.sample(sorted(topics), len(topics) // 2))
    for t in removed:
        index.remove(t)
    for f in filters:
        assert sorted(index.match(f)) == sorted(t for t in topics - removed if reference_match(f, t)), f
    for t in topics - removed:
        index.remove(t)
    assert index.match("#") == []
