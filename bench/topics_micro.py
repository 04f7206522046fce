"""Micro-benchmark: SubscriptionIndex (trie) vs amqtt 0.12.1's scan of every filter on every publish.

python -m bench.topics_micro

Subscriptions: one `devices/dev<i>/commands/req/+` per device plus a few wildcard ones (backend, monitor).
Measured: time to add them all, matches/s for a telemetry topic (matched only by the wildcard filters) and a
command topic (matched by one device plus the wildcards), and the naive scan at the smaller sizes.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

from broker.topics import SubscriptionIndex

SIZES = (1_000, 10_000, 100_000)
NAIVE_SIZES = (1_000, 10_000)
EXTRA = [("devices/+/telemetry", "ingest", 1), ("devices/#", "audit", 0), ("$SYS/#", "monitor", 0), ("#", "debug", 0)]
MIN_SECONDS = 0.5


def subscriptions(n: int) -> list[tuple[str, str, int]]:
    return [(f"devices/dev{i}/commands/req/+", f"dev{i}", 1) for i in range(n)] + EXTRA


def naive_matches(topic: str, a_filter: str) -> bool:
    """amqtt 0.12.1 `Broker._matches`, minus the logging."""
    if topic.startswith("$") and a_filter.startswith(("+", "#")):
        return False
    if "#" not in a_filter and "+" not in a_filter:
        return a_filter == topic
    sub_levels = a_filter.split("/")
    pub_levels = topic.split("/")
    for i, level in enumerate(sub_levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            return False
        if level == "#":
            return i == len(sub_levels) - 1
        if i >= len(pub_levels) or level not in ("+", pub_levels[i]):
            return False
    return len(sub_levels) == len(pub_levels)


class NaiveTable:
    """amqtt-style: dict[filter, list[(client_id, qos)]], every filter tested on every publish."""

    def __init__(self) -> None:
        self.subs: dict[str, list[tuple[str, int]]] = {}

    def add(self, topic_filter: str, client_id: str, qos: int) -> None:
        self.subs.setdefault(topic_filter, []).append((client_id, qos))

    def match(self, topic: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for a_filter, subs in self.subs.items():
            if naive_matches(topic, a_filter):
                for client_id, qos in subs:
                    if out.get(client_id, -1) < qos:
                        out[client_id] = qos
        return out


def rate(match: Callable[[str], dict[str, int]], topics: list[str]) -> float:
    """Matches per second, cycling through `topics`, for at least MIN_SECONDS."""
    done, start = 0, time.perf_counter()
    while True:
        for topic in topics:
            match(topic)
        done += len(topics)
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_SECONDS:
            return done / elapsed


def topics_for(n: int) -> tuple[list[str], list[str]]:
    picks = [(k * 7919) % n for k in range(200)]
    return [f"devices/dev{k}/telemetry" for k in picks], [f"devices/dev{k}/commands/req/{k}" for k in picks]


def main() -> None:
    result: dict[str, str] = {}
    print(f"{'N':>8} {'add all':>10} {'telemetry/s':>12} {'command/s':>12} {'remove_client':>14}")
    for n in SIZES:
        subs = subscriptions(n)
        index = SubscriptionIndex()
        start = time.perf_counter()
        for topic_filter, client_id, qos in subs:
            index.add(topic_filter, client_id, qos)
        add_s = time.perf_counter() - start
        telemetry, commands = topics_for(n)
        assert index.match(telemetry[0]) == {"ingest": 1, "audit": 0, "debug": 0}
        assert len(index.match(commands[0])) == 3
        tele, cmd = rate(index.match, telemetry), rate(index.match, commands)
        start = time.perf_counter()
        for k in range(0, n, max(1, n // 1000)):
            index.remove_client(f"dev{k}")
        removes = len(range(0, n, max(1, n // 1000)))
        rm_us = (time.perf_counter() - start) / removes * 1e6
        print(f"{n:>8} {add_s * 1e3:>8.1f}ms {tele:>12,.0f} {cmd:>12,.0f} {rm_us:>11.2f}us")
        k = f"{n // 1000}k"
        result |= {
            f"add_{k}_ms": f"{add_s * 1e3:.1f}",
            f"tele_{k}_per_s": f"{tele:.0f}",
            f"cmd_{k}_per_s": f"{cmd:.0f}",
        }
        result[f"remove_client_{k}_us"] = f"{rm_us:.2f}"

    print("\nnaive scan (amqtt 0.12.1 style)")
    print(f"{'N':>8} {'telemetry/s':>12} {'command/s':>12} {'trie speedup (telemetry)':>26}")
    for n in NAIVE_SIZES:
        naive, index = NaiveTable(), SubscriptionIndex()
        for topic_filter, client_id, qos in subscriptions(n):
            naive.add(topic_filter, client_id, qos)
            index.add(topic_filter, client_id, qos)
        telemetry, commands = topics_for(n)
        for topic in telemetry[:20] + commands[:20] + ["$SYS/broker/uptime", "other"]:
            assert naive.match(topic) == index.match(topic), topic
        tele, cmd = rate(naive.match, telemetry[:10]), rate(naive.match, commands[:10])
        speedup = float(result[f"tele_{n // 1000}k_per_s"]) / tele
        print(f"{n:>8} {tele:>12,.0f} {cmd:>12,.0f} {speedup:>25,.0f}x")
        k = f"{n // 1000}k"
        result |= {f"naive_tele_{k}_per_s": f"{tele:.0f}", f"naive_cmd_{k}_per_s": f"{cmd:.0f}"}
        result[f"speedup_tele_{k}"] = f"{speedup:.0f}"

    tracemalloc.start()
    index = SubscriptionIndex()
    for topic_filter, client_id, qos in subscriptions(SIZES[-1]):
        index.add(topic_filter, client_id, qos)
    per_sub = tracemalloc.get_traced_memory()[0] / len(index)
    tracemalloc.stop()
    print(f"\nmemory: {per_sub:.0f} bytes per subscription at N={SIZES[-1]:,} (index incl. per-client dicts)")
    result["mem_bytes_per_sub_100k"] = f"{per_sub:.0f}"
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()))


if __name__ == "__main__":
    main()
