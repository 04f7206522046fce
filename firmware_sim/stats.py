"""Counters, latency percentiles and a throttled stderr progress line for load tools."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Stats:
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    reconnects: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def record_latency(self, seconds: float) -> None:
        self.latencies_ms.append(seconds * 1000.0)

    def percentile(self, pct: float) -> float:
        """Nearest-rank percentile in ms (0.0 when nothing was recorded)."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
        return ordered[int(rank) - 1]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    def summary(self) -> str:
        return (
            f"sent={self.sent} acked={self.acked} rejected={self.rejected} "
            f"reconnects={self.reconnects} p50={self.p50:.1f}ms p99={self.p99:.1f}ms"
        )


class Progress:
    """Writes `\\r`-updated status lines to a stream at most `max_rate` times a second."""

    def __init__(self, label: str = "", *, stream: TextIO | None = None, max_rate: float = 4.0) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = 1.0 / max_rate
        self._last = 0.0
        self._width = 0
        self._text = ""

    def update(self, text: str, *, force: bool = False) -> None:
        self._text = text
        now = time.monotonic()
        if force or now - self._last >= self.min_interval:
            self._last = now
            self._write()

    def _write(self) -> None:
        line = f"{self.label} {self._text}" if self.label else self._text
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self, text: str | None = None) -> None:
        """Write the last state (or `text`) and end the line."""
        if text is not None:
            self._text = text
        self._write()
        self.stream.write("\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
