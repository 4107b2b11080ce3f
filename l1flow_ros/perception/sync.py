"""Approximate-time synchronisation of N sensor streams (no ROS).

Streams are named (``"front/color"``, ``"front/depth"``, ``"joint_states"``, ...).
One stream is the *reference* (by default the first): every synchronised set
is anchored on one of its messages, and the set's observation time is that
message's stamp. A set is complete when every other stream has a message
within ``slop`` of the reference stamp; the nearest one is taken.

Behaviour the node relies on:

- keep-newest: :meth:`ApproximateTimeSync.add` returns the newest complete set
  not older than the last one returned, or ``None``; sets are never returned
  twice, and never go back in time;
- out-of-order arrival is fine (queues are kept sorted by stamp), so a late
  message still completes the set it belongs to;
- a missing message (a dropped frame) only means no set for that instant;
- queues hold ``window`` seconds behind the newest stamp seen (bounded memory);
- :meth:`invalidate` forgets a stream's queue (after an invalid message, so a
  set is never built from what came before it).

Thread safe: the node adds from subscription callbacks.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SyncedSet:
    """One message per stream, all within ``slop`` of ``stamp_ns`` (the reference's stamp)."""

    stamp_ns: int
    items: dict[str, Any] = field(default_factory=dict)
    stamps: dict[str, int] = field(default_factory=dict)

    @property
    def spread_ns(self) -> int:
        return max(self.stamps.values()) - min(self.stamps.values())


class ApproximateTimeSync:
    def __init__(
        self,
        streams: Sequence[str],
        slop_s: float,
        window_s: float = 1.0,
        max_queue: int = 1000,
        reference: str | None = None,
    ) -> None:
        streams = tuple(streams)
        if not streams:
            raise ValueError("ApproximateTimeSync needs at least one stream")
        if len(set(streams)) != len(streams):
            raise ValueError(f"repeated stream names {streams}")
        if slop_s < 0 or window_s <= 0 or max_queue < 1:
            raise ValueError(f"bad sync settings slop={slop_s} window={window_s} max_queue={max_queue}")
        self.streams = streams
        self.reference = reference if reference is not None else streams[0]
        if self.reference not in streams:
            raise ValueError(f"reference {self.reference!r} is not one of {streams}")
        self.slop_ns = int(round(slop_s * 1e9))
        self.window_ns = int(round(window_s * 1e9))
        self.max_queue = int(max_queue)
        self._stamps: dict[str, list[int]] = {s: [] for s in streams}
        self._items: dict[str, list[Any]] = {s: [] for s in streams}
        self._newest_seen: dict[str, int | None] = {s: None for s in streams}
        self._last_emitted: int | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ queries

    def last_stamp(self, stream: str) -> int | None:
        """Stamp of the newest valid message received on ``stream`` (None if none)."""
        with self._lock:
            return self._newest_seen[stream]

    def queue_len(self, stream: str) -> int:
        with self._lock:
            return len(self._stamps[stream])

    # ------------------------------------------------------------------ updates

    def reset(self) -> None:
        with self._lock:
            for s in self.streams:
                self._stamps[s].clear()
                self._items[s].clear()
                self._newest_seen[s] = None
            self._last_emitted = None

    def invalidate(self, stream: str) -> None:
        """Drop everything queued on ``stream`` (it just delivered invalid data)."""
        with self._lock:
            self._stamps[stream].clear()
            self._items[stream].clear()
            self._newest_seen[stream] = None

    def add(self, stream: str, stamp_ns: int, item: Any) -> SyncedSet | None:
        """Queue a message; return the newest new complete set, if any."""
        if stream not in self._stamps:
            raise KeyError(f"unknown stream {stream!r}; streams are {self.streams}")
        stamp_ns = int(stamp_ns)
        with self._lock:
            st, it = self._stamps[stream], self._items[stream]
            i = bisect.bisect_left(st, stamp_ns)
            if i < len(st) and st[i] == stamp_ns:
                it[i] = item  # same stamp again: the newer copy wins
            else:
                st.insert(i, stamp_ns)
                it.insert(i, item)
            prev = self._newest_seen[stream]
            self._newest_seen[stream] = stamp_ns if prev is None else max(prev, stamp_ns)
            self._trim()
            return self._match()

    # ------------------------------------------------------------------ internals

    def _trim(self) -> None:
        newest = max((v for v in self._newest_seen.values() if v is not None), default=None)
        if newest is None:
            return
        horizon = newest - self.window_ns
        for s in self.streams:
            st, it = self._stamps[s], self._items[s]
            k = bisect.bisect_left(st, horizon)
            k = max(k, len(st) - self.max_queue)
            if k > 0:
                del st[:k]
                del it[:k]

    def _nearest(self, stream: str, t: int) -> int | None:
        st = self._stamps[stream]
        if not st:
            return None
        i = bisect.bisect_left(st, t)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(st) and (best is None or abs(st[j] - t) < abs(st[best] - t)):
                best = j
        if best is None or abs(st[best] - t) > self.slop_ns:
            return None
        return best

    def _match(self) -> SyncedSet | None:
        ref_st = self._stamps[self.reference]
        for r in range(len(ref_st) - 1, -1, -1):  # newest reference message first
            t = ref_st[r]
            if self._last_emitted is not None and t <= self._last_emitted:
                return None
            picks = {self.reference: r}
            for s in self.streams:
                if s == self.reference:
                    continue
                j = self._nearest(s, t)
                if j is None:
                    break
                picks[s] = j
            else:
                out = SyncedSet(
                    stamp_ns=t,
                    items={s: self._items[s][j] for s, j in picks.items()},
                    stamps={s: self._stamps[s][j] for s, j in picks.items()},
                )
                self._last_emitted = t
                # Reference messages up to this one can never anchor a newer set.
                del ref_st[: r + 1]
                del self._items[self.reference][: r + 1]
                return out
        return None
