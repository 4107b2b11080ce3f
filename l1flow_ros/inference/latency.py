"""Latency bookkeeping for the inference node's diagnostics and the benchmarks (ROS-free)."""

from __future__ import annotations

import threading

import numpy as np


class LatencyWindow:
    """The last ``size`` latencies (seconds) in a ring; percentiles over that window."""

    def __init__(self, size: int = 512) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self._buf = np.zeros(size, np.float64)
        self._n = 0  # total samples ever added
        self._lock = threading.Lock()
        self.last = float("nan")

    def add(self, seconds: float) -> None:
        with self._lock:
            self._buf[self._n % self._buf.size] = seconds
            self._n += 1
            self.last = float(seconds)

    @property
    def count(self) -> int:
        return self._n

    def summary(self) -> dict[str, float]:
        """{'p50','p99','max','mean','last'} in milliseconds over the window (NaN when empty)."""
        with self._lock:
            k = min(self._n, self._buf.size)
            w = self._buf[:k].copy()
            last = self.last
        if k == 0:
            nan = float("nan")
            return {"p50": nan, "p99": nan, "max": nan, "mean": nan, "last": nan}
        p50, p99 = np.percentile(w, [50, 99])
        return {"p50": 1e3 * p50, "p99": 1e3 * p99, "max": 1e3 * w.max(), "mean": 1e3 * w.mean(), "last": 1e3 * last}


class Latest:
    """A one-slot mailbox: ``put`` replaces what is there (drop-oldest), ``take`` empties it."""

    def __init__(self) -> None:
        self._item = None
        self._lock = threading.Lock()
        self.dropped = 0  # items replaced before anyone took them

    def put(self, item: object) -> None:
        with self._lock:
            if self._item is not None:
                self.dropped += 1
            self._item = item

    def take(self) -> object | None:
        with self._lock:
            item, self._item = self._item, None
            return item
