"""Checkpoint hot-swap, ROS-free: which head decodes which embedding.

Protocol (docs/ARCHITECTURE.md, "Checkpoint swap"):

1. a new bundle is validated (synchronously, cheap checks) and warmed up off the control
   path; it then becomes *pending* next to the *active* head;
2. perception is told the new bundle path, loads its encoder and from then on stamps
   embeddings with the new fingerprint;
3. the first embedding with the pending fingerprint promotes the pending head to active
   and retires the old one. An embedding is only ever decoded by the head whose
   fingerprint it carries; any other fingerprint is dropped.

:class:`HeadSwitcher` is that state machine; the inference node owns one and calls
:meth:`HeadSwitcher.route` for each embedding. Heads are opaque objects with a
``fingerprint`` attribute (a :class:`~l1flow_ros.inference.runner.PolicyRunner`).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class Head(Protocol):
    fingerprint: str


class HeadSwitcher:
    """Active head + optional pending head, routed by fingerprint. Thread-safe."""

    def __init__(self, active: Head | None = None) -> None:
        self._lock = threading.Lock()
        self._active = active
        self._pending: Head | None = None
        self.promotions = 0
        self.unknown = 0  # embeddings dropped for an unknown fingerprint

    @property
    def active(self) -> Head | None:
        return self._active

    @property
    def pending(self) -> Head | None:
        return self._pending

    @property
    def state(self) -> str:
        if self._active is None:
            return "empty"
        return "pending" if self._pending is not None else "steady"

    def set_active(self, head: Head | None) -> list[Any]:
        """Replace everything by ``head`` (configure / cleanup); returns heads to free."""
        with self._lock:
            old = [h for h in (self._active, self._pending) if h is not None and h is not head]
            self._active, self._pending = head, None
            return old

    def stage(self, head: Head) -> list[Any]:
        """Make ``head`` pending; a previous pending head is superseded and returned to free.

        Staging the active fingerprint cancels any pending swap (back to steady).
        """
        with self._lock:
            freed = []
            if self._active is not None and head.fingerprint == self._active.fingerprint:
                if self._pending is not None:
                    freed.append(self._pending)
                self._pending = None
                if head is not self._active:
                    freed.append(head)
                return freed
            if self._pending is not None and self._pending is not head:
                freed.append(self._pending)
            self._pending = head
            return freed

    def route(self, fingerprint: str) -> tuple[Head | None, list[Any]]:
        """The head that may decode an embedding stamped ``fingerprint``.

        Returns (head or None when unknown, heads retired by this call to free).
        """
        with self._lock:
            if self._active is not None and fingerprint == self._active.fingerprint:
                return self._active, []
            if self._pending is not None and fingerprint == self._pending.fingerprint:
                retired = [self._active] if self._active is not None else []
                self._active, self._pending = self._pending, None
                self.promotions += 1
                return self._active, retired
            self.unknown += 1
            return None, []
