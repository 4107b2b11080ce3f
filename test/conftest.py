"""Test-wide setup: every run talks ROS 2 only to itself.

Each pytest process gets its own ROS_DOMAIN_ID (from its pid) and localhost-only
discovery, so parallel runs (and other sessions on the machine) never hear each
other. This must happen before rclpy is imported anywhere.

Nodes that a test composes in its own process are spun the way the package composes them
(:class:`l1flow_ros.nodes.composition.Composition`, whose ``make_executor`` gives each node an
executor on its own thread; test_executor_starvation.py shows it delivering every message
where rclpy's stock MultiThreadedExecutor starves): through the ``spin_nodes`` fixture, never
an executor of the test's own. ``from conftest import ...``: :func:`wait_for`, the one polling helper;
:func:`matched`, what a test waits for before its first message that counts; :class:`Calls`,
how it knows that a node has handled something.
"""

import os

from l1flow_ros.graph.launcher import private_domain_id  # no rclpy: the domain is set before it loads

os.environ["ROS_DOMAIN_ID"] = str(int(os.environ.get("L1FLOW_TEST_DOMAIN_ID", private_domain_id(os.getpid()))))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
# One intra-op thread: the models in tests are tiny, and OpenMP threads that spin at barriers
# stall for minutes when the cores are busy with other work (seen on a loaded 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time
from pathlib import Path

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


# The tiers (pyproject.toml says what each may use): every test carries exactly one, so that
# `-m core`, `-m learning`, `-m node` and `-m graph` together are the whole suite.
TIERS = ("core", "learning", "node", "graph")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: an untiered test is refused by every run
def pytest_collection_modifyitems(config, items):
    untiered = []
    for item in items:
        tiers = [m.name for m in item.iter_markers() if m.name in TIERS]
        if len(tiers) != 1:
            untiered.append(f"  {item.nodeid}: {', '.join(tiers) or 'no tier'}")
    if untiered:
        raise pytest.UsageError(
            f"each test needs exactly one tier marker of {', '.join(TIERS)} (a module's `pytestmark`, "
            "or the test's own decorator in a module that mixes tiers):\n" + "\n".join(untiered)
        )
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (TensorRT / CUDA backends)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _descendants(root: int) -> dict[int, str]:
    """{pid: command line} of the processes below ``root`` (Linux /proc), zombies left out."""
    children: dict[int, list[int]] = {}
    cmd: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rpartition(")")[2].split()
            if rest[0] == "Z":
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd[int(d)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            children.setdefault(int(rest[1]), []).append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out[pid] = cmd.get(pid, "")
        todo += children.get(pid, [])
    return out


# Processes that belong to the test process itself and live as long as it does.
_LONG_LIVED = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
_LONG_LIVED_THREADS = ("zarr_io", "asyncio_", "tqdm_monitor")  # idle library threads (zarr, tqdm)


@pytest.fixture(scope="module", autouse=True)
def nothing_left_running():
    """Every process a test module starts (node graphs, guards, bare loops, busy loops) and
    every thread it starts here (executors, control loops) has ended by the end of the module:
    one left running takes CPU, or a real-time priority, from the modules after it. A process
    that has not ended 10 s on is killed; either way the module fails."""
    import threading

    before = set(_descendants(os.getpid()))
    threads_before = set(threading.enumerate())
    yield
    left: dict[int, str] = {}
    threads: list[str] = []
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        left = {p: c for p, c in _descendants(os.getpid()).items()
                if p not in before and not any(k in c for k in _LONG_LIVED)}
        threads = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()
                   and not t.name.startswith(_LONG_LIVED_THREADS)]
        if not left and not threads:
            return
        time.sleep(0.2)
    if not left:
        pytest.fail(f"threads of this process still running after the module: {threads}", pytrace=False)
    import signal

    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    pytest.fail("processes still running after the module (killed): "
                + "; ".join(f"{p}: {c[:160]}" for p, c in sorted(left.items()))
                + (f"; threads of this process still running: {threads}" if threads else ""), pytrace=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks on a shared 2-core machine: one torch thread (whatever OMP_NUM_THREADS
    says) avoids OpenMP spin contention. Modules opt in with ``pytestmark``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ros_context():
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        ctx.try_shutdown()


def exported_tiny_bundle(d: Path, seed: int) -> Path:
    """A tiny untrained L1 Flow bundle with warm start (``inference.synthetic``), exported to
    ONNX (encoder, policy, warm policy) in ``d``."""
    from l1flow_ros.inference.export import export_bundle
    from l1flow_ros.inference.synthetic import make_bundle

    make_bundle(d, seed=seed)
    export_bundle(d)
    return d


def wait_for(pred, timeout: float = 30.0, step: float = 0.02) -> bool:
    """Poll ``pred`` until it is true; its last value. ``timeout`` only ends a wait for
    something that never comes (a failing test): every wait is on a condition, none on a
    time, so a slow machine makes a test slower, never wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def matched(*endpoints) -> bool:
    """Every publisher among ``endpoints`` has a subscription and every subscription a
    publisher: discovery done both ways, so nothing sent from now on is lost to it (wait for
    it with ``wait_for(lambda: matched(...))`` before the first message that counts)."""
    for e in endpoints:
        count = e.get_subscription_count if hasattr(e, "get_subscription_count") else e.get_publisher_count
        if count() == 0:
            return False
    return True


class Calls:
    """Counts the calls of a timer's or a subscription's callback that have returned: rclpy's
    executors read ``.callback`` each time they run one, so this wraps it in place. What a
    test waits for when it needs the node to have handled something ("10 more ticks")."""

    def __init__(self, entity) -> None:
        self.n = 0
        inner = entity.callback

        def counted(*args):
            try:
                return inner(*args)
            finally:
                self.n += 1

        entity.callback = counted


@pytest.fixture
def spin_nodes(ros_context):
    """``spin_nodes(*nodes)`` -> a :class:`~l1flow_ros.nodes.composition.Composition` in
    ``ros_context`` spinning the nodes as the package composes nodes; closed after the test
    (its nodes closed and destroyed before the context shuts down) unless the test closed it
    already (a test that checks what the nodes left behind). Closing raises a callback's error
    and fails when the spin loops did not stop."""
    from l1flow_ros.nodes.composition import Composition

    class Spun(Composition):
        def close(self, timeout: float = 10.0) -> bool:
            assert super().close(timeout), "the spin loops did not stop"
            return True

    spun: list[Spun] = []

    def spin(*nodes) -> Spun:
        s = Spun(context=ros_context).start()
        spun.append(s)
        s.add(*nodes)
        return s

    yield spin
    errors = []
    for s in reversed(spun):
        try:
            s.close()
        except BaseException as e:  # close the others first
            errors.append(e)
    if errors:
        raise errors[0]
