"""Subscription index: a topic-filter trie (MQTT 3.1.1 §4.7), pure Python, no amqtt.

amqtt keeps `dict[filter, subscribers]` and tests every filter on every publish; here a publish walks
only the trie branches its topic levels lead to, so the cost depends on the topic's depth and on the
filters that match, not on how many subscriptions exist.
"""

from __future__ import annotations

MAX_TOPIC_BYTES = 65535


class _Node:
    __slots__ = ("children", "hash", "plus", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}  # literal level -> child
        self.plus: _Node | None = None  # the `+` child
        self.hash: dict[str, int] = {}  # client_id -> qos for "<path to here>/#"
        self.subs: dict[str, int] = {}  # client_id -> qos for "<path to here>"

    def empty(self) -> bool:
        return not (self.children or self.plus or self.hash or self.subs)


class SubscriptionIndex:
    """Topic-filter trie: match cost depends on the topic's depth and the matching filters,
    not on the number of subscriptions.
    """

    __slots__ = ("_clients", "_count", "_root")

    def __init__(self) -> None:
        self._root = _Node()
        self._clients: dict[str, dict[str, int]] = {}  # client_id -> {filter: qos}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, client_id: str, qos: int) -> bool:
        """Subscribe; True if the (filter, client) pair is new, False if only its qos was replaced."""
        node, levels = self._root, topic_filter.split("/")
        last = len(levels) - 1
        for i, level in enumerate(levels):
            if level == "#" and i == last:
                table = node.hash
                break
            if level == "+":
                if node.plus is None:
                    node.plus = _Node()
                node = node.plus
            else:  # literal (a misplaced "#" or "a+b" is stored literally: topic names never contain them)
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node()
                node = child
        else:
            table = node.subs
        new = client_id not in table
        table[client_id] = qos
        self._clients.setdefault(client_id, {})[topic_filter] = qos
        self._count += new
        return new

    def remove(self, topic_filter: str, client_id: str) -> bool:
        """Unsubscribe; True if the pair existed. Nodes left empty are pruned."""
        mine = self._clients.get(client_id)
        if mine is None or topic_filter not in mine:
            return False
        del mine[topic_filter]
        if not mine:
            del self._clients[client_id]
        path: list[tuple[_Node, str]] = []  # (parent, level) for each step taken
        node, levels = self._root, topic_filter.split("/")
        last = len(levels) - 1
        for i, level in enumerate(levels):
            if level == "#" and i == last:
                del node.hash[client_id]
                break
            path.append((node, level))
            node = node.plus if level == "+" else node.children[level]  # type: ignore[assignment]
        else:
            del node.subs[client_id]
        for parent, level in reversed(path):
            if not node.empty():
                break
            if level == "+":
                parent.plus = None
            else:
                del parent.children[level]
            node = parent
        self._count -= 1
        return True

    def remove_client(self, client_id: str) -> list[str]:
        """Drop every subscription of a client (its own filters only, no table scan); return the filters."""
        filters = list(self._clients.get(client_id, ()))
        for topic_filter in filters:
            self.remove(topic_filter, client_id)
        return filters

    def filters_of(self, client_id: str) -> dict[str, int]:
        return dict(self._clients.get(client_id, {}))

    def match(self, topic: str) -> dict[str, int]:
        """client_id -> max qos over that client's filters matching `topic` (§3.3.5: one delivery, max qos)."""
        out: dict[str, int] = {}

        def merge(table: dict[str, int]) -> None:
            for cid, qos in table.items():
                if out.get(cid, -1) < qos:
                    out[cid] = qos

        root = self._root
        dollar = topic.startswith("$")  # §4.7.2: "+" / "#" as first level never match "$..." topics
        nodes = [root]
        for level in topic.split("/"):
            following = []
            for node in nodes:
                wild = not (dollar and node is root)
                if node.hash and wild:
                    merge(node.hash)
                child = node.children.get(level)
                if child is not None:
                    following.append(child)
                if node.plus is not None and wild:
                    following.append(node.plus)
            if not following:
                return out
            nodes = following
        for node in nodes:
            merge(node.subs)
            merge(node.hash)  # "a/#" also matches "a" (the parent level)
        return out


def _utf8_len(text: str) -> int | None:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates are not valid MQTT UTF-8
        return None


def valid_filter(topic_filter: str) -> bool:
    """A subscribable filter: `#` only as the whole last level, `+` only as a whole level."""
    size = _utf8_len(topic_filter)
    if not topic_filter or size is None or size > MAX_TOPIC_BYTES or "\0" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def valid_topic_name(topic: str) -> bool:
    """A publishable topic: no wildcards."""
    size = _utf8_len(topic)
    return bool(topic) and size is not None and size <= MAX_TOPIC_BYTES and not any(c in topic for c in "+#\0")


class _TopicNode:
    __slots__ = ("children", "present")

    def __init__(self) -> None:
        self.children: dict[str, _TopicNode] = {}
        self.present = False


class RetainedIndex:
    """The topics that hold a retained message, found by filter without scanning every topic
    (amqtt 0.12.1 tests every retained topic against the filter of every SUBSCRIBE)."""

    __slots__ = ("_root",)

    def __init__(self) -> None:
        self._root = _TopicNode()

    def add(self, topic: str) -> None:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _TopicNode()
            node = child
        node.present = True

    def remove(self, topic: str) -> None:
        path = [self._root]
        for level in topic.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        path[-1].present = False
        levels = topic.split("/")
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.present or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def match(self, topic_filter: str) -> list[str]:
        """Retained topics the filter matches (§4.7; wildcards at the first level skip `$` topics)."""
        found: list[str] = []
        levels = topic_filter.split("/")

        def walk(node: _TopicNode, i: int, path: list[str]) -> None:
            if i == len(levels):
                if node.present:
                    found.append("/".join(path))
                return
            level = levels[i]
            if level == "#":
                if node.present and i > 0:  # "a/#" also matches "a"
                    found.append("/".join(path))
                stack = [(node, path)]
                while stack:
                    n, p = stack.pop()
                    for name, child in n.children.items():
                        if i == 0 and not p and name.startswith("$"):
                            continue
                        q = [*p, name]
                        if child.present:
                            found.append("/".join(q))
                        stack.append((child, q))
            elif level == "+":
                for name, child in node.children.items():
                    if i == 0 and name.startswith("$"):
                        continue
                    walk(child, i + 1, [*path, name])
            else:
                child = node.children.get(level)
                if child is not None:
                    walk(child, i + 1, [*path, level])

        walk(self._root, 0, [])
        return found
