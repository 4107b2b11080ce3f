"""Run several nodes in one process (manual composition) from one parameter file.

The same parameter file a launch file would pass to each node is passed here once with
``--params-file``: each node reads its own section. Lifecycle nodes are configured and
activated in file order, as a launch file with lifecycle event handlers would do.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from l1flow_ros.graph import node_class


def _parse_override(text: str) -> tuple[str, str]:
    """'node:name:=value' -> ('node', 'name:=value')."""
    node, sep, rest = text.partition(":")
    if not sep or ":=" not in rest:
        raise ValueError(f"override {text!r} is not NODE:NAME:=VALUE")
    return node, rest


def call_service(client, request, timeout: float = 10.0):
    """Call a service from a thread other than the spinning executor's; its response.

    RuntimeError when the service is not there or does not answer within ``timeout`` s.
    """
    if not client.wait_for_service(timeout_sec=timeout):
        raise RuntimeError(f"service {client.srv_name} not available")
    fut = client.call_async(request)
    end = time.monotonic() + timeout
    while not fut.done():
        if time.monotonic() > end:
            raise RuntimeError(f"service {client.srv_name} did not answer in {timeout} s")
        time.sleep(0.005)
    return fut.result()


def destroy_nodes(nodes) -> None:
    """Close (where a node has ``close``) and destroy every node, in order."""
    for n in nodes:
        close = getattr(n, "close", None)
        if close:
            close()
        n.destroy_node()


def start_nodes(context, names: list[str], overrides: list[str] = ()) -> list:
    """Instantiate the named nodes in ``context``; lifecycle nodes are configured + activated."""
    per_node: dict[str, list[str]] = {}
    for o in overrides:
        node, rest = _parse_override(o)
        per_node.setdefault(node, []).append(rest)
    nodes = []
    for name in names:
        cli = []
        for rest in per_node.get(name, []):
            cli += ["-p", rest]
        kwargs = {"context": context}
        if cli:
            kwargs["cli_args"] = ["--ros-args", *cli]
        node = node_class(name)(**kwargs)
        nodes.append(node)
        if isinstance(node, LifecycleNode):
            for step in (node.trigger_configure, node.trigger_activate):
                ret = step()
                if ret != TransitionCallbackReturn.SUCCESS:
                    raise RuntimeError(f"{name}: lifecycle transition {step.__name__} failed")
    return nodes


def run_graph(path: Path, names: list[str], duration: float = 0.0, threads: int = 4,
              overrides: list[str] = ()) -> int:
    args = ["--ros-args", "--params-file", str(path)]
    try:
        with rclpy.init(args=args) as _:
            context = rclpy.get_default_context()
            nodes = start_nodes(context, names, overrides)
            executor = MultiThreadedExecutor(num_threads=threads, context=context)
            for n in nodes:
                executor.add_node(n)
            if duration > 0:
                timer = threading.Timer(duration, lambda: rclpy.try_shutdown(context=context))
                timer.daemon = True
                timer.start()
            t0 = time.monotonic()
            try:
                executor.spin()
            finally:
                executor.shutdown()
                destroy_nodes(nodes)
            print(f"l1flow run: stopped after {time.monotonic() - t0:.1f} s")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


def spin_node(node_cls, args: list[str] | None = None, threads: int = 1, close_first: bool = False) -> None:
    """The console-script body every node shares: init, spin until Ctrl-C or shutdown, clean up.

    ``threads`` > 1 spins a MultiThreadedExecutor (nodes with their own callback groups);
    a lifecycle node whose ``autostart`` parameter is true is configured and activated here.
    """
    from rclpy.executors import SingleThreadedExecutor

    try:
        with rclpy.init(args=args):
            node = node_cls()
            cfg = getattr(node, "cfg", None)
            if isinstance(node, LifecycleNode) and getattr(cfg, "autostart", False):
                for step in (node.trigger_configure, node.trigger_activate):
                    if step() != TransitionCallbackReturn.SUCCESS:
                        node.get_logger().error(f"autostart: {step.__name__} failed")
                        break
            executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
            executor.add_node(node)
            try:
                executor.spin()
            finally:
                if close_first:
                    node.close()
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
