"""High-rate subscriptions read by a thread of their own, outside the node's executor.

rclpy's executors are Python: every pass rebuilds the wait set and walks the node's
entities, about 400-530 µs of interpreter time per message (rclpy 9.1.2, one 500 Hz
``Float64MultiArray`` subscription: 20-27 % of a core). A Python stand-in for an arm
controller that receives the executor node's 500 Hz command stream pays a quarter of a core
for it, on the cores perception and inference need. :class:`StreamReader` takes such
subscriptions through a wait set of its own (the same calls rclpy's ``wait_for_message``
makes) on one thread: about 100 µs a message, and the node's executor never sees them (their
callback group never lets it execute them, so they and their QoS event handlers stay out of
its wait set).

    reader = StreamReader(node, "commands")
    reader.subscribe(Float64MultiArray, "/forward_position_controller/commands", on_cmd, qos)
    reader.start()
    ...
    reader.stop()  # before the node is destroyed

Handlers run on the reader's thread, one message at a time, in arrival order per
subscription; an exception in a handler is logged (throttled) and the next message is read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rclpy.callback_groups import CallbackGroup
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription

WAIT_TIMEOUT_NS = 200_000_000  # re-check the context this often when nothing arrives


class _ReadElsewhere(CallbackGroup):
    """A callback group no executor runs: its entities are left out of every executor's
    wait set (``Executor.can_execute`` asks the group)."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


class StreamReader:
    """Subscriptions of ``node`` taken on one thread of their own (module docstring)."""

    def __init__(self, node: Node, name: str) -> None:
        self._node = node
        self._name = name
        self._group = _ReadElsewhere()
        self._subs: list[tuple[Subscription, Callable[[object], None]]] = []
        self._stop = threading.Event()
        self._wake = GuardCondition(None, None, context=node.context)
        self._thread: threading.Thread | None = None

    def subscribe(self, msg_type, topic: str, handler: Callable[[object], None], qos: QoSProfile) -> Subscription:
        """Subscribe ``handler`` (called with each message); before :meth:`start`."""
        if self._thread is not None:
            raise RuntimeError("StreamReader.subscribe after start")
        sub = self._node.create_subscription(msg_type, topic, handler, qos, callback_group=self._group)
        self._subs.append((sub, handler))
        return sub

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop and join the thread (idempotent); the subscriptions stay with the node."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            try:
                self._wake.trigger()
            except Exception:  # the context is gone already: the wait times out instead
                pass
            self._thread.join(timeout)
        try:
            self._wake.destroy()
        except Exception:
            pass

    def _loop(self) -> None:
        context = self._node.context
        ws = _rclpy.WaitSet(len(self._subs), 1, 0, 0, 0, 0, context.handle)
        log = self._node.get_logger()
        while not self._stop.is_set() and context.ok():
            ws.clear_entities()
            for sub, _ in self._subs:
                ws.add_subscription(sub.handle)
            ws.add_guard_condition(self._wake.handle)
            try:
                ws.wait(WAIT_TIMEOUT_NS)
            except Exception:  # the context was shut down under the wait
                break
            ready = ws.get_ready_entities("subscription")
            if not ready:
                continue
            for sub, handler in self._subs:
                if sub.handle.pointer not in ready:
                    continue
                while not self._stop.is_set():
                    try:
                        with sub.handle:
                            taken = sub.handle.take_message(sub.msg_type, sub.raw)
                    except Exception:  # destroyed or shut down meanwhile
                        return
                    if taken is None:
                        break
                    try:
                        handler(taken[0])
                    except Exception as e:
                        log.error(f"{sub.topic_name}: handler failed: {type(e).__name__}: {e}",
                                  throttle_duration_sec=1.0)
