"""Run several nodes in one process (manual composition) from one parameter file.

The same parameter file a launch file would pass to each node is passed here once with
``--params-file``: each node reads its own section. Lifecycle nodes are configured and
activated in file order, as a launch file with lifecycle event handlers would do.

:class:`Composition` is the one bring-up and teardown of nodes in a process (a context, the
nodes' executors on a thread, the teardown in its safe order): for the probes of the tools
that drive a graph from outside (evaluation, recording, the fault harness, the launcher), for
``l1flow eval --one-process``, the benches and the tests' ``spin_nodes`` fixture.

Executors: :func:`make_executor` (nodes composed in one process) and :func:`spin_node` (a
node's own process) both take each node's executor from :func:`executor_for`, the one place
that chooses it:

- every node gets an executor of its own, spun on a thread of its own, so a slow callback of
  one node never holds up another node's callbacks, and no node's callbacks share a wait set
  with another node's subscriptions;
- a node whose ``callback_threads`` class attribute is 1 (the default: every node whose
  callbacks only hand work to threads of its own or are short) gets a SingleThreadedExecutor;
- a node that runs callback groups side by side (``callback_threads`` > 1: the inference node,
  whose inference callback group must not hold up its I/O group) gets a MultiThreadedExecutor
  with that many threads, with the busy loop described below taken out
  (:class:`GuardedMultiThreadedExecutor`).

Why not rclpy's MultiThreadedExecutor over every node (measured with rclpy 9.1.2,
rmw_fastrtps_cpp 9.3.3, Fast DDS 3.2.3 on 2 shared cores): whenever a message's handler waits
for a worker, its spin thread loops without blocking (0.3-0.7 s of CPU per second while one
message waits behind a busy worker, against 0.00 for GuardedMultiThreadedExecutor), and the
loop competes for the interpreter lock with the callbacks it should start. Two subscribers of
an 80 Hz topic whose callbacks work 2 ms each got 44-75 Hz (1 thread) and 52-80 Hz (4 threads),
losing up to 180 messages in 5 s from a reliable depth-10 queue, with 1000-3000 re-submissions
of already queued handlers per second; one single-threaded executor per node got all 80 Hz.
Bare subscribers (no work) got 80 Hz under every executor there. The loop, step by step:

1. the executor hands a ready subscription's handler to its thread pool and marks the
   subscription taken (``_executor_event``): it leaves the wait set until a worker has taken
   the message;
2. rclpy gives every subscription two QoS event handlers (incompatible QoS, incompatible
   type), waitables in the subscription's callback group. They stay in the wait set, since
   that group is not executing yet;
3. rmw_fastrtps checks an event through its DataReader's StatusCondition, which stays
   triggered while the reader holds an untaken message: ``rmw_wait`` returns at once with
   nothing ready (``has_triggered_condition`` skips the wait);
4. the executor rebuilds the wait set in Python and waits again, returning at once again,
   until a worker gets the interpreter lock and takes the message; every pass also hands each
   not yet started handler to the pool again (rclpy issue 1452, fixed upstream after 9.x),
   each one a wake-up of a worker that must take the lock to find nothing to do.

A SingleThreadedExecutor runs each handler before it waits again, so no subscription is ever
marked taken while its executor waits: ``rmw_wait`` blocks until there is work, and there is
no hand-over between threads per message. :class:`GuardedMultiThreadedExecutor` leaves a
subscription's event handlers out of the wait set while the subscription is out of it
(step 2), so that ``rmw_wait`` no longer returns for a message nobody can take yet; its
passes are then caused by work (a message, a timer, a handler starting or ending). Its
hand-overs to workers remain, which is why only nodes that need callback groups side by side
get it. A node in its own process (``l1flow run``, ``ros2 launch``) gets the same executor
through :func:`spin_node`. Composed nodes still share one interpreter lock (the executor
node's 500 Hz control thread included), which no executor choice removes: composition is for
tests and side-by-side benchmarks, deployments run one process per node.
"""

from __future__ import annotations

import threading
import time
import weakref

import rclpy
from rclpy.event_handler import EventHandler
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future

from l1flow_ros.control import realtime
from l1flow_ros.graph import node_class
from l1flow_ros.nodes.params import refuse_bad_parameters


class GuardedMultiThreadedExecutor(MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor whose wait never returns with nothing to do.

    A subscription's QoS event handlers are left out of the wait set while the subscription
    is (its handler is queued or taking the message): rmw_fastrtps reports them triggered
    while the subscription's reader holds the message, which made the stock executor spin
    (module docstring). Reads rclpy's ``_executor_event`` flag; without it (another rclpy),
    this is the stock executor.
    """

    def __init__(self, num_threads: int, *, context=None) -> None:
        super().__init__(num_threads=num_threads, context=context)
        # event handler -> weak reference to its subscription (or None: a publisher's)
        self._event_parent: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def can_execute(self, entity) -> bool:
        if isinstance(entity, EventHandler):
            if entity not in self._event_parent:
                self._map_event_handlers()
                self._event_parent.setdefault(entity, None)
            ref = self._event_parent.get(entity)
            sub = ref() if ref is not None else None
            if sub is not None and getattr(sub, "_executor_event", False):
                return False
        return super().can_execute(entity)

    def _map_event_handlers(self) -> None:
        for node in self.get_nodes():
            for sub in node.subscriptions:
                for h in getattr(sub, "event_handlers", ()):
                    self._event_parent[h] = weakref.ref(sub)


def executor_for(node, context=None) -> Executor:
    """The executor that spins ``node`` (and nothing else), chosen as the module docstring says."""
    context = context if context is not None else node.context
    threads = int(getattr(node, "callback_threads", 1))
    ex = GuardedMultiThreadedExecutor(threads, context=context) if threads > 1 else SingleThreadedExecutor(
        context=context)
    ex.add_node(node)
    return ex


class NodeExecutors:
    """Nodes composed in one process, each spun by its own executor (:func:`executor_for`) on
    its own thread. The calls of an rclpy executor that compositions use: ``add_node``,
    ``get_nodes``, ``spin`` (blocks until :meth:`shutdown`, the context's shutdown, or a
    callback raising, which it re-raises), ``shutdown``."""

    def __init__(self, nodes=(), context=None) -> None:
        self.context = context if context is not None else rclpy.get_default_context()
        self._lock = threading.Lock()
        self._executors: dict = {}  # node -> its executor
        self._threads: list[threading.Thread] = []
        self._stop = Future()  # done: every spin loop returns
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self._spinning = False
        self._is_shutdown = False
        for n in nodes:
            self.add_node(n)

    def add_node(self, node) -> bool:
        with self._lock:
            if node in self._executors or self._is_shutdown:
                return False
            ex = executor_for(node, self.context)
            self._executors[node] = ex
            if self._spinning:
                self._start(node, ex)
        return True

    def get_nodes(self) -> list:
        with self._lock:
            return list(self._executors)

    def _start(self, node, ex: Executor) -> None:
        t = threading.Thread(target=self._spin_one, args=(ex,), name=f"spin_{node.get_name()}", daemon=True)
        self._threads.append(t)
        t.start()

    def _spin_one(self, ex: Executor) -> None:
        try:
            ex.spin_until_future_complete(self._stop)
        except ExternalShutdownException:
            pass
        except BaseException as e:  # a callback raised: spin() raises it, as rclpy's spin would
            self._error = self._error or e
        finally:
            self._ended.set()

    def spin(self) -> None:
        with self._lock:
            if self._spinning or self._is_shutdown:
                raise RuntimeError("NodeExecutors.spin: already spinning or shut down")
            self._spinning = True
            for node, ex in self._executors.items():
                self._start(node, ex)
        while not self._ended.wait(0.1):  # a spin loop ends: shutdown, context shut down, error
            if not self.context.ok():
                break
        self._stop_loops(5.0)
        if self._error is not None:
            raise self._error

    def _stop_loops(self, timeout_sec: float | None) -> bool:
        if not self._stop.done():
            self._stop.set_result(True)  # wakes every executor
        end = None if timeout_sec is None else time.monotonic() + timeout_sec
        ok = True
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(None if end is None else max(0.0, end - time.monotonic()))
                ok = ok and not t.is_alive()
        return ok

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Stop every spin loop (joined), then shut the executors down: no callback runs after."""
        with self._lock:
            self._is_shutdown = True
        ok = self._stop_loops(timeout_sec)
        for ex in list(self._executors.values()):
            ok = ex.shutdown(timeout_sec=timeout_sec) and ok
        return ok


def make_executor(nodes, context=None) -> NodeExecutors:
    """What spins ``nodes`` composed in one process: one executor per node (module docstring)."""
    return NodeExecutors(nodes, context)


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


class Composition:
    """Nodes in this process, brought up and torn down the one way every tool and test does it.

    ``with Composition(args=[...]) as c:`` initialises an rclpy context of its own (``args``: the
    ROS arguments its nodes read, e.g. ``["--ros-args", "--params-file", path]``), or uses the
    caller's ``context`` (left running at the end); nodes made in ``c.context`` and handed to
    :meth:`add`, or started by name with :meth:`start_nodes`, are spun by :func:`make_executor`
    (one executor per node, each on a thread of its own) as soon as they are added. Leaving the
    block (or :meth:`close`): every spin loop stops and is joined, then each node is closed
    (where it has ``close``) and destroyed in the order it was added, then the own context shuts
    down; so no callback runs on a destroyed node. A callback that raised while spinning stops
    the spinning (:meth:`alive` turns false, :meth:`check` raises) and is raised again by
    :meth:`close`.
    """

    def __init__(self, args: list[str] | None = None, context=None) -> None:
        self._own_context = context is None
        self.context = rclpy.Context() if context is None else context
        self._args = list(args or [])
        self.nodes: list = []
        self.executor: NodeExecutors | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> Composition:
        if self._own_context:
            rclpy.init(args=self._args, context=self.context)
        self.executor = make_executor([], self.context)
        self._thread = threading.Thread(target=self._spin, name="composition_spin", daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except BaseException as e:  # a callback raised: close() raises it again
            self.error = e

    def add(self, *nodes) -> None:
        """Spin ``nodes`` (made in :attr:`context`) from now on; they are destroyed at close."""
        for n in nodes:
            self.nodes.append(n)
            self.executor.add_node(n)

    def start_nodes(self, names: list[str], overrides: list[str] = ()) -> list:
        """The graph's nodes by name (:func:`start_nodes`: lifecycle nodes configured and
        activated before they spin), spun from now on."""
        nodes = start_nodes(self.context, names, overrides)
        self.add(*nodes)
        return nodes

    def alive(self) -> bool:
        """Still spinning: not closed, no callback raised, the context not shut down."""
        return self._thread is not None and self._thread.is_alive() and not self._closed

    def check(self) -> None:
        """RuntimeError when the nodes no longer spin (the callback's error as its cause)."""
        if not self.alive():
            raise RuntimeError("the composed nodes' executor stopped") from self.error

    def close(self, timeout: float = 10.0) -> bool:
        """Stop and join the spin loops, close and destroy the nodes, shut the own context
        down; whether the loops stopped within ``timeout`` s. Idempotent."""
        if self._closed:
            return True
        self._closed = True
        stopped = True
        if self.executor is not None:
            stopped = self.executor.shutdown(timeout_sec=timeout)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            stopped = stopped and not self._thread.is_alive()
        try:
            destroy_nodes(self.nodes)
        finally:
            if self._own_context:
                self.context.try_shutdown()
        if self.error is not None:
            raise self.error
        return stopped

    def __enter__(self) -> Composition:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def spin_node(node_cls, args: list[str] | None = None, close_first: bool = False) -> None:
    """The console-script body every node shares: init, spin until Ctrl-C or shutdown, clean up.

    The node's executor comes from :func:`executor_for` (as when nodes are composed); a
    lifecycle node whose ``autostart`` parameter is true is configured and activated here.
    SIGINT / SIGTERM go to a pipe, not to rclpy's handler (:func:`realtime.stop_signals_to_pipe`):
    the first one shuts the context down from a thread of its own, which stops the spin; a
    second one while the node cleans up (``ros2 launch`` from a terminal sends Ctrl-C twice:
    the terminal's and launch's own) only writes to the pipe, so it can never raise
    KeyboardInterrupt in the middle of the clean-up (in a destructor, say), and the exit code
    is 0 either way. Python resets its handlers to the default at interpreter exit, hence the
    ignore after the ``with``. A stop signal may come at any moment of the start or the spin:
    whatever rclpy raises once the context is shut down (an executor made on a dead context,
    a wait set built from handles destroyed under it) is that stop, not a failure.
    """
    own_signals = threading.current_thread() is threading.main_thread()
    signal_fd = realtime.stop_signals_to_pipe() if own_signals else -1
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO if own_signals else None):
            if own_signals:
                realtime.on_stop_signal(signal_fd, rclpy.get_default_context().try_shutdown, "l1flow_stop_signals")
            try:
                with refuse_bad_parameters():  # bad parameters: one line and exit code 2
                    node = node_cls()
            except Exception:
                if not rclpy.ok():  # stopped while starting (the context went away under it)
                    return
                raise
            try:
                cfg = getattr(node, "cfg", None)
                if isinstance(node, LifecycleNode) and getattr(cfg, "autostart", False):
                    for step in (node.trigger_configure, node.trigger_activate):
                        if step() != TransitionCallbackReturn.SUCCESS:
                            node.get_logger().error(f"autostart: {step.__name__} failed")
                            break
                if rclpy.ok():  # not made on a dead context (rclpy's half-made executor then
                    executor_for(node).spin()  # prints a traceback when collected)
            except Exception:
                if rclpy.ok():
                    raise
            finally:
                if close_first:
                    node.close()
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if own_signals:
            realtime.ignore_stop_signals()
