"""The inference delay, measured from stamps: how much of the running plan executes while a
chunk is computed.

For each accepted chunk, ``d = ceil((arrival - t_obs) / dt)``: the control steps (at the
chunk's dt) between the observation the chunk was computed from and the chunk's arrival at
the executor. Those first ``d`` actions of the new chunk are already due or past when it
arrives; the running plan executes them instead. Real-time chunking needs ``d`` to freeze
that prefix and to keep ``d <= s <= H - d`` (s: the execution horizon).

The estimate is a high percentile over a sliding window of recent chunks, with the first
chunks after a start excluded (model warm-up, first discovery, caches): never a running
maximum, which one slow warm-up would pin for good (the failure LeRobot pull request 4223
reports: 21 of 30 actions of every chunk skipped after a slow first inference).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from l1flow_ros.policy.prefix import delay_steps


class DelayEstimator:
    """Sliding-window percentile of the inference delay (module docstring). Not thread-safe:
    one thread adds (the executor node's chunk callback), readers take a snapshot."""

    def __init__(self, window: int = 64, warmup: int = 3, percentile: float = 95.0) -> None:
        if window < 1 or warmup < 0 or not 0.0 < percentile <= 100.0:
            raise ValueError("window >= 1, warmup >= 0, 0 < percentile <= 100")
        self.window, self.warmup, self.percentile = int(window), int(warmup), float(percentile)
        self._latency_s: deque[float] = deque(maxlen=self.window)
        self._steps: deque[int] = deque(maxlen=self.window)
        self._seen = 0

    def reset(self) -> None:
        """Forget every sample; the next ``warmup`` chunks are excluded again (a restart)."""
        self._latency_s.clear()
        self._steps.clear()
        self._seen = 0

    def add(self, t_obs_ns: int, arrival_ns: int, dt_s: float) -> int:
        """One accepted chunk; returns its own delay in steps (also during warm-up)."""
        latency = max(0.0, (int(arrival_ns) - int(t_obs_ns)) * 1e-9)
        steps = delay_steps(latency, dt_s)
        self._seen += 1
        if self._seen > self.warmup:
            self._latency_s.append(latency)
            self._steps.append(steps)
        return steps

    @property
    def samples(self) -> int:
        """Chunks in the window (warm-up excluded)."""
        return len(self._steps)

    def steps(self) -> int | None:
        """The delay in control steps at the percentile (None before the first sample): the
        smallest d that covers ``percentile`` % of the window's chunks."""
        if not self._steps:
            return None
        return int(np.percentile(np.asarray(self._steps), self.percentile, method="higher"))

    def latency_ms(self, q: float | None = None) -> float:
        """Observation -> arrival latency at percentile ``q`` (default: the estimator's), ms."""
        if not self._latency_s:
            return float("nan")
        q = self.percentile if q is None else q
        return float(np.percentile(np.asarray(self._latency_s), q)) * 1e3
