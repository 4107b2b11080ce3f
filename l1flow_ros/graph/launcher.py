"""One OS process per node, as ``ros2 launch`` starts a graph: ``l1flow run`` and every tool.

    l1flow run sim                                   # config/sim.yaml, Ctrl-C to stop
    l1flow run my_arm.yaml -p inference_node:checkpoint:=/path/to/bundle

What it does, the way launch / launch_ros do it for the launch files in ``launch/``:

- each node of the parameter file runs as its own process: its console script (or
  ``python -m l1flow_ros.nodes.<node>`` where the scripts are not on disk) with
  ``--ros-args --params-file <file>`` and the node's ``-p name:=value`` overrides;
- lifecycle nodes (:data:`l1flow_ros.graph.LIFECYCLE_NODES`) are configured, then
  activated, through their ``change_state`` services, as the launch files' event handlers do;
- every line a node prints (stdout and stderr) comes out prefixed with ``[node]``, to the
  terminal or to a log file;
- Ctrl-C or SIGTERM stops them all: SIGINT to each node (rclpy's handler shuts the node down
  cleanly), SIGTERM after ``stop_timeout`` s, SIGKILL after that. Each node runs in a session
  of its own, so a terminal's Ctrl-C reaches it once, from here, never twice; and each is
  tied to this process (``PR_SET_PDEATHSIG``), so no node outlives a launcher that is killed;
- a node that exits or crashes while the graph runs is reported with the end of its output,
  the rest are stopped, and ``l1flow run`` exits non-zero.

Before any process starts, the parameter file and the overrides are checked against each
node's config class (:data:`NODE_CONFIGS`, :func:`l1flow_ros.config.check_parameter_file`):
a file that is not YAML, an unknown (misspelt) parameter, a value of the wrong type, a value
the config's ``validate()`` refuses (lower above upper, ...), and executor joint names that
are not the action names of the bundle the file deploys are each one line naming the file
and line, the node and the parameter; none of them starts a node (:class:`ParameterError`,
``l1flow run`` exits 2 with the list). The nodes check again themselves
(:func:`l1flow_ros.nodes.params.declare`), for ``ros2 launch``, which has no such step. A
calibration file that is missing while the bundle needs points starts the graph held (a
warning line, :func:`graph_warnings`): perception retries until the file is there.

Who can talk to the graph: ``l1flow run`` keeps the ROS domain and discovery range of its
environment and, where ``ROS_AUTOMATIC_DISCOVERY_RANGE`` is unset, makes discovery
localhost-only (``LOCALHOST``) for the launcher and every node: another machine on the
network then neither sees nor reaches the nodes. ``--discovery-range SUBNET`` (or the
variable) opens it for an arm controller on another machine. What this does and does not
protect against, and why there is no DDS security here, is in docs/RELIABILITY.md
(Security).

Why processes and not threads: in one Python process every node shares one interpreter
lock with the executor's 500 Hz control thread, and rclpy's MultiThreadedExecutor was
measured to starve an 80 Hz topic with two subscribers in the process to about 3 Hz (see
:mod:`l1flow_ros.nodes.composition`). Separate processes are also what a user gets from
``ros2 launch``, so the tools measure what is deployed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from l1flow_ros.config import ParameterError, check_parameter_file, parse_override, read_parameter_file
from l1flow_ros.graph import LIFECYCLE_NODES, NODE_CLASSES, nodes_in_config, resolve_path

_PR_SET_PDEATHSIG = 1

# node name -> "module:Class" of its config (what its __init__ gives declare()).
# test_bad_config checks each against the node's own code.
NODE_CONFIGS: dict[str, str] = {
    "sim_robot_node": "l1flow_ros.sim.robot:SimRobotConfig",
    "panda_sim_node": "l1flow_ros.sim.arm.robot:PandaRobotConfig",
    "teleop_node": "l1flow_ros.sim.teleop:TeleopConfig",
    "recorder_node": "l1flow_ros.nodes.recorder_node:RecorderConfig",
    "perception_node": "l1flow_ros.perception.pipeline:PerceptionConfig",
    "inference_node": "l1flow_ros.inference.config:InferenceConfig",
    "executor_node": "l1flow_ros.control.config:ExecutorConfig",
}

DISCOVERY_RANGES = ("LOCALHOST", "SUBNET", "OFF", "SYSTEM_DEFAULT")


class GraphError(RuntimeError):
    """A node of the graph could not be started, configured or kept running."""


def parse_overrides(overrides: Iterable[str]) -> dict[str, list[str]]:
    """``["node:name:=value", ...]`` -> ``{"node": ["name:=value", ...]}``."""
    per_node: dict[str, list[str]] = {}
    for text in overrides:
        node, sep, rest = text.partition(":")
        if not sep or ":=" not in rest:
            raise ValueError(f"override {text!r} is not NODE:NAME:=VALUE")
        per_node.setdefault(node, []).append(rest)
    return per_node


def config_class(name: str) -> type:
    """The config dataclass of node ``name``."""
    import importlib

    module, cls = NODE_CONFIGS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _manifest(path: str) -> dict:
    """A bundle's manifest as JSON ({} when it cannot be read: the inference node then refuses
    the bundle with the reason, after checking it fully)."""
    import json

    try:
        data = json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _GraphValues:
    """The value each node of the graph will get (file, then ``-p``) and where it was set."""

    def __init__(self, params_file: str | Path, overrides: dict[str, list[str]]) -> None:
        self.file, self.nodes, self.overrides = str(params_file), read_parameter_file(params_file), overrides

    def get(self, node: str, key: str, default=None) -> tuple[object, str]:
        found = self.nodes.get(node, {}).get(key, (default, f"{self.file} (default)"))
        for text in self.overrides.get(node, ()):
            name, value, where = parse_override(node, text)
            if name == key:
                found = (value, where)
        return found

    def bundle(self) -> tuple[str, str, dict]:
        """(checkpoint as given, where, its manifest) of the graph's inference node."""
        checkpoint, where = self.get("inference_node", "checkpoint", "")
        if not isinstance(checkpoint, str) or not checkpoint:
            return "", where, {}
        return checkpoint, where, _manifest(resolve_path(checkpoint))


def _joint_names_problem(values: _GraphValues, names: Sequence[str]) -> list[str]:
    """Executor joint_names that are not the action names of the bundle the graph deploys (the
    executor would reject every chunk of it)."""
    if "executor_node" not in names or "inference_node" not in names:
        return []
    checkpoint, ck_where, manifest = values.bundle()
    actions = (manifest.get("action") or {}).get("names") if manifest else None
    if not isinstance(actions, list):
        return []
    joints, where = values.get("executor_node", "joint_names", list(config_class("executor_node")().joint_names))
    joints = list(joints or [])
    if sorted(joints) == sorted(map(str, actions)):
        return []
    return [f"{where}: executor_node: joint_names {joints} are not the action names {actions} of the "
            f"checkpoint {checkpoint} ({ck_where}: inference_node.checkpoint)"]


def graph_warnings(params_file: str | Path, names: Sequence[str] | None = None,
                   overrides: Iterable[str] | dict[str, list[str]] = ()) -> list[str]:
    """What lets the graph start but keeps it held, one line each: a perception calibration
    file that does not exist while the deployed bundle needs points (perception encodes
    nothing, so the executor gets no chunk and holds, until the file appears: perception
    retries) and that no simulated arm of the graph writes."""
    per_node = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    try:
        values = _GraphValues(params_file, per_node)
        names = list(names) if names is not None else [n for n in values.nodes if n in NODE_CONFIGS]
        if "perception_node" not in names:
            return []
        calib, where = values.get("perception_node", "calibration_file", "")
        if not isinstance(calib, str) or not calib or Path(resolve_path(calib)).exists():
            return []
        if "sim_robot_node" in names and values.get("sim_robot_node", "calibration_file", "")[0] == calib:
            return []  # the simulated arm writes it at start
        checkpoint, ck_where, manifest = values.bundle()
        if int((manifest.get("observation") or {}).get("num_points", 0) or 0) <= 0:
            return []
    except (ParameterError, TypeError, ValueError):
        return []  # check_graph_parameters reports what is wrong with the file
    return [f"{where}: perception_node: calibration_file {calib!r} does not exist, and the checkpoint "
            f"{checkpoint} ({ck_where}) needs points: nothing is encoded and the executor holds until it does"]


def check_graph_parameters(params_file: str | Path, names: Sequence[str] | None = None,
                           overrides: Iterable[str] | dict[str, list[str]] = ()) -> list[str]:
    """Every problem that keeps a node of the graph from starting, one line each (empty: none)."""
    try:
        in_file = read_parameter_file(params_file)
    except ParameterError as e:
        return [str(e)]
    names = list(names) if names is not None else [n for n in in_file if n in NODE_CONFIGS]
    per_node = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    configs = {n: config_class(n) for n in names}  # only these: a node not run is not imported
    lines = check_parameter_file(params_file, configs, per_node, known=NODE_CONFIGS)
    if not lines:
        try:
            lines = _joint_names_problem(_GraphValues(params_file, per_node), names)
        except ParameterError as e:
            lines = [str(e)]
    return lines


ENCLAVE_PREFIX = "/l1flow/"  # node x runs in the SROS2 enclave /l1flow/x; the launcher in /l1flow/launcher


def security_enabled(env: dict[str, str] | None = None) -> bool:
    """ROS_SECURITY_ENABLE=true: each process needs its enclave in ROS_SECURITY_KEYSTORE."""
    return (os.environ if env is None else env).get("ROS_SECURITY_ENABLE", "").lower() == "true"


def security_problems(names: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """With ROS_SECURITY_ENABLE=true: the enclaves the keystore lacks, one line each (rcl's own
    error names only the first, from inside the node that fails)."""
    env = os.environ if env is None else env
    if not security_enabled(env) or env.get("ROS_SECURITY_ENCLAVE_OVERRIDE"):
        return []
    keystore = env.get("ROS_SECURITY_KEYSTORE", "")
    if not keystore:
        return ["ROS_SECURITY_ENABLE=true but ROS_SECURITY_KEYSTORE is not set"]
    lines = []
    for n in [*names, "launcher"]:
        enclave = Path(keystore) / "enclaves" / (ENCLAVE_PREFIX + n).lstrip("/")
        if not (enclave / "cert.pem").is_file():
            lines.append(f"keystore {keystore} has no enclave {ENCLAVE_PREFIX}{n} "
                         f"(ros2 security create_enclave {keystore} {ENCLAVE_PREFIX}{n})")
    return lines


def node_command(name: str, params_file: str | Path, params: Sequence[str] = (),
                 enclave: bool = False) -> list[str]:
    """The command line that runs node ``name`` as ``ros2 run`` / launch_ros would
    (``enclave``: in its SROS2 enclave, ``/l1flow/<name>``)."""
    if name not in NODE_CLASSES:
        raise ValueError(f"unknown node {name!r}; known: {sorted(NODE_CLASSES)}")
    script = Path(sys.executable).parent / name
    exe = [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", f"l1flow_ros.nodes.{name}"]
    ros_args = ["--ros-args", "--params-file", str(params_file)]
    if enclave:
        ros_args += ["--enclave", ENCLAVE_PREFIX + name]
    for p in params:
        ros_args += ["-p", p]
    return [*exe, *ros_args]


def _tie_to_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux), own session."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class _Proc:
    """One node's process and the thread that copies its output, prefixed."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], sink: IO[str], lock: threading.Lock):
        self.name = name
        self.cmd = cmd
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._sink, self._lock = sink, lock
        self.popen = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, errors="replace", start_new_session=True, preexec_fn=_tie_to_parent,
        )
        self._reader = threading.Thread(target=self._copy, name=f"out_{name}", daemon=True)
        self._reader.start()

    def _copy(self) -> None:
        for line in self.popen.stdout:
            self.tail.append(line)
            with self._lock:
                try:
                    self._sink.write(f"[{self.name}] {line}")
                    self._sink.flush()
                except ValueError:  # sink closed at shutdown
                    return

    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def join_output(self, timeout: float = 2.0) -> None:
        self._reader.join(timeout)


class ProcessGraph:
    """The nodes of one parameter file, one process each.

    ``with ProcessGraph(path, overrides=[...]) as g:`` starts every node and brings the
    lifecycle nodes to active; leaving the block stops them all. ``g.wait()`` blocks until a
    node exits (returns its name) or ``timeout``. Start it from a thread that lives as long as
    the graph: the children are tied to the thread that started them.
    """

    def __init__(
        self,
        params_file: str | Path,
        names: Sequence[str] | None = None,
        overrides: Iterable[str] = (),
        log_file: str | Path | None = None,
        env: dict[str, str] | None = None,
        lifecycle_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        activate: bool = True,
    ) -> None:
        self.params_file = Path(params_file)
        self.names = list(names) if names is not None else nodes_in_config(self.params_file)
        self.overrides = parse_overrides(overrides)
        unknown = sorted(set(self.overrides) - set(self.names))
        if unknown:
            raise ValueError(f"overrides for nodes not in the graph: {unknown}; graph: {self.names}")
        self.log_file = Path(log_file) if log_file else None
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.lifecycle_timeout = lifecycle_timeout
        self.activate = activate  # False: lifecycle nodes are left unconfigured
        self.stop_timeout = stop_timeout
        self.procs: dict[str, _Proc] = {}
        self.exit_codes: dict[str, int] = {}
        self._sink: IO[str] = sys.stdout
        self._own_sink = False
        self._lock = threading.Lock()

    # -- start / stop ---------------------------------------------------------------------------

    def start(self) -> ProcessGraph:
        """Check the parameters (ParameterError listing every problem, nothing started), then
        start every node and bring the lifecycle nodes to active."""
        problems = check_graph_parameters(self.params_file, self.names, self.overrides)
        problems += security_problems(self.names, self.env)
        if problems:
            raise ParameterError("\n".join(problems))
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._sink, self._own_sink = self.log_file.open("a", buffering=1), True
        try:
            for name in self.names:
                cmd = node_command(name, self.params_file, self.overrides.get(name, ()),
                                   enclave=security_enabled(self.env))
                self.procs[name] = _Proc(name, cmd, self.env, self._sink, self._lock)
            lifecycle = [n for n in self.names if n in LIFECYCLE_NODES and self.activate]
            if lifecycle:
                self._activate(lifecycle)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> dict[str, int]:
        """SIGINT every node, then SIGTERM / SIGKILL what is still running; the exit codes."""
        for p in self.procs.values():
            p.signal(signal.SIGINT)
        for sig, grace in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 3.0), (None, 3.0)):
            end = time.monotonic() + grace
            while time.monotonic() < end and any(p.returncode() is None for p in self.procs.values()):
                time.sleep(0.02)
            if sig is None:
                break
            for p in self.procs.values():
                if p.returncode() is None:
                    self._say(f"{p.name} did not stop in {grace:.0f} s: {signal.Signals(sig).name}")
                    p.signal(sig)
        for name, p in self.procs.items():
            p.join_output()
            rc = p.returncode()
            self.exit_codes[name] = rc if rc is not None else -9
        if self._own_sink:
            with self._lock:
                self._sink.close()
            self._sink, self._own_sink = sys.stdout, False
        return dict(self.exit_codes)

    def stop_node(self, name: str, sig: int = signal.SIGINT, timeout: float | None = None) -> int:
        """Stop one node (``sig`` first, SIGKILL after ``timeout`` s); its exit code."""
        p = self.procs[name]
        p.signal(sig)
        try:
            rc = p.popen.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            p.signal(signal.SIGKILL)
            rc = p.popen.wait()
        p.join_output()
        self.exit_codes[name] = rc
        return rc

    def restart_node(self, name: str, sig: int = signal.SIGINT) -> None:
        """Stop one node and start it again with the same command (lifecycle nodes re-activated)."""
        if self.procs[name].returncode() is None:
            self.stop_node(name, sig)
        cmd = self.procs[name].cmd
        self.procs[name] = _Proc(name, cmd, self.env, self._sink, self._lock)
        if name in LIFECYCLE_NODES and self.activate:
            self._activate([name])

    def __enter__(self) -> ProcessGraph:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- watching -----------------------------------------------------------------------------

    def exited(self) -> dict[str, int]:
        """Nodes whose process has ended, with their exit codes."""
        return {n: rc for n, p in self.procs.items() if (rc := p.returncode()) is not None}

    def check(self) -> None:
        """GraphError naming the first node that is no longer running, with its last output."""
        gone = self.exited()
        if gone:
            name, rc = next(iter(gone.items()))
            raise GraphError(f"{name} exited with code {rc}; its last output:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 20) -> str:
        p = self.procs[name]
        p.join_output(0.5)
        return "".join(list(p.tail)[-lines:]).rstrip()

    def wait(self, timeout: float | None = None, stop_event: threading.Event | None = None) -> str | None:
        """Block until a node exits (its name), ``stop_event`` is set or ``timeout`` s pass (None)."""
        end = None if timeout is None or timeout <= 0 else time.monotonic() + timeout
        while end is None or time.monotonic() < end:
            gone = self.exited()
            if gone:
                return next(iter(gone))
            if stop_event is not None and stop_event.wait(0.05):
                return None
            if stop_event is None:
                time.sleep(0.05)
        return None

    def wait_discovered(self, names: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        """Block until the named nodes (default: all) are on the ROS graph; GraphError if not.

        A node on the graph has initialised rclpy, so from then on SIGINT stops it cleanly.
        """
        want = set(self.names if names is None else names)
        with _probe() as node:
            end = time.monotonic() + timeout
            while True:
                seen = {n for n, _ in node.get_node_names_and_namespaces()}
                if want <= seen:
                    return
                for n in want - seen:
                    self._check_alive(n, "before it joined the ROS graph")
                if time.monotonic() > end:
                    raise GraphError(f"not on the ROS graph after {timeout:.0f} s: {sorted(want - seen)}")
                time.sleep(0.05)

    def _say(self, text: str) -> None:
        with self._lock:
            try:
                self._sink.write(f"[launcher] {text}\n")
                self._sink.flush()
            except ValueError:
                pass

    # -- lifecycle ----------------------------------------------------------------------------

    def _activate(self, names: list[str]) -> None:
        """configure, then activate, each lifecycle node through its change_state service."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState, GetState

        with _probe() as node:
            for name in names:
                # One pair of clients for both transitions: a client made later would
                # have to discover the service again (seconds on a loaded machine).
                clients = [node.create_client(ChangeState, f"/{name}/change_state"),
                           node.create_client(GetState, f"/{name}/get_state")]
                try:
                    for tid, label in ((Transition.TRANSITION_CONFIGURE, "configure"),
                                       (Transition.TRANSITION_ACTIVATE, "activate")):
                        self._transition(node, clients, name, tid, label)
                finally:
                    for c in clients:
                        node.destroy_client(c)
                self._say(f"{name}: configured and active")

    def _transition(self, node, clients: list, name: str, transition_id: int, label: str) -> None:
        """One transition; robust to a request lost on the way (a server matched too early).

        A request sent the moment discovery reports the service can be lost (services keep no
        history for late-matching servers). When no answer comes for a while, the node's
        ``get_state`` says where it is: at the goal (done), still at the start (re-sent), or in
        the transition (keep waiting). No service after half the timeout: what discovery sees
        of the node is logged and the clients are made anew (matched afresh); the error at
        the timeout says it too.
        """
        from lifecycle_msgs.msg import State
        from lifecycle_msgs.srv import ChangeState, GetState

        start, goal = {"configure": (State.PRIMARY_STATE_UNCONFIGURED, State.PRIMARY_STATE_INACTIVE),
                       "activate": (State.PRIMARY_STATE_INACTIVE, State.PRIMARY_STATE_ACTIVE)}[label]
        change, get = clients
        end = time.monotonic() + self.lifecycle_timeout

        def wait_until(cond, until: float) -> bool:
            while not cond():
                self._check_alive(name, f"during {label}")
                if time.monotonic() > min(until, end):
                    return cond()
                time.sleep(0.02)  # the probe's executor completes the futures
            return True

        if not wait_until(change.service_is_ready, time.monotonic() + self.lifecycle_timeout / 2):
            self._say(f"{name}: no change_state service after {self.lifecycle_timeout / 2:.0f} s (to {label}; "
                      f"{_discovery_report(node, name)}): clients made anew")
            for i, c in enumerate(clients):
                clients[i] = node.create_client(c.srv_type, c.srv_name)
                node.destroy_client(c)
            change, get = clients
            if not wait_until(change.service_is_ready, end):
                raise GraphError(f"{name}: no change_state service within {self.lifecycle_timeout:.0f} s (to {label}; "
                                 f"{_discovery_report(node, name)}); its last output:\n{self.tail(name)}")
        req = ChangeState.Request()
        req.transition.id = transition_id
        futures = [change.call_async(req)]
        while True:
            answered = wait_until(lambda: any(f.done() for f in futures), time.monotonic() + 10.0)
            if answered and any(f.done() and f.result().success for f in futures):
                return
            state = None
            if get.service_is_ready():
                g = get.call_async(GetState.Request())
                if wait_until(g.done, time.monotonic() + 5.0):
                    state = g.result().current_state.id
            if state == goal:
                return
            if answered:  # refused, and not at the goal
                raise GraphError(f"{name}: {label} failed; its last output:\n{self.tail(name)}")
            if time.monotonic() > end:
                raise GraphError(f"{name}: {label} did not finish within {self.lifecycle_timeout:.0f} s")
            if state == start:  # the request never arrived: send it again
                futures.append(change.call_async(req))

    def _check_alive(self, name: str, doing: str) -> None:
        rc = self.procs[name].returncode()
        if rc is not None:
            raise GraphError(f"{name} exited with code {rc} {doing}; its last output:\n{self.tail(name)}")


def _discovery_report(node, name: str) -> str:
    """What the probe's discovery sees of node ``name``: on the graph or not, its services."""
    seen = {n for n, _ in node.get_node_names_and_namespaces()}
    if name not in seen:
        return f"not on the ROS graph; nodes seen: {sorted(seen)}"
    try:
        services = sorted(s for s, _ in node.get_service_names_and_types_by_node(name, "/"))
    except Exception as e:  # the node left the graph meanwhile
        return f"on the ROS graph; its services unknown ({e})"
    return f"on the ROS graph with {len(services)} services: {services[:8]}"


@contextlib.contextmanager
def _probe():
    """The launcher's own node (no rosout, no parameter services) in a context of its own,
    spun by :class:`~l1flow_ros.nodes.composition.Composition`."""
    import rclpy

    from l1flow_ros.nodes.composition import Composition

    args = ["--ros-args", "--enclave", ENCLAVE_PREFIX + "launcher"] if security_enabled() else None
    with Composition(args=args) as rig:
        node = rclpy.create_node(f"l1flow_launcher_{os.getpid()}", context=rig.context,
                                 enable_rosout=False, start_parameter_services=False)
        rig.add(node)
        yield node


# Domains for runs that talk only to themselves: the range the tests and the fault suite have
# always run in. ROS 2 advises 0-101 on Linux (above, Fast DDS's ports can fall in the
# ephemeral range 32768-60999); a move to 1-101 was tried and made no difference here.
PRIVATE_DOMAINS = range(100, 200)


def private_domain_id(seed: int) -> int:
    """A ROS domain for a run that talks only to itself (tests, benchmarks, the fault suite,
    the soak): one of PRIVATE_DOMAINS from ``seed`` (a process id)."""
    return PRIVATE_DOMAINS[seed % len(PRIVATE_DOMAINS)]


def network_env(domain_id: int | None = None, discovery_range: str | None = None) -> dict[str, str]:
    """The ROS domain and discovery range ``l1flow run`` uses, applied to this process's
    environment (the launcher's own node and every node inherit it): the arguments where
    given, else the environment's, else domain 0 and localhost-only discovery."""
    if domain_id is not None:
        if not 0 <= domain_id <= 232:
            raise ValueError(f"ROS domain id {domain_id} is not in [0, 232]")
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    if discovery_range is not None:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = discovery_range
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rng = os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    if rng not in DISCOVERY_RANGES:
        raise ValueError(f"ROS_AUTOMATIC_DISCOVERY_RANGE {rng!r} is not one of {DISCOVERY_RANGES}")
    return {"ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "0"), "ROS_AUTOMATIC_DISCOVERY_RANGE": rng}


def run(params_file: str | Path, names: Sequence[str] | None = None, overrides: Iterable[str] = (),
        duration: float = 0.0, domain_id: int | None = None, discovery_range: str | None = None) -> int:
    """``l1flow run``: start the graph, stop it on Ctrl-C / SIGTERM / ``duration``; the exit code.

    0 when stopped on request; 1 when a node exited on its own (or could not be started);
    2 when the parameters are bad (every problem printed, one line each, nothing started).
    """
    try:
        net = network_env(domain_id, discovery_range)
        problems = check_graph_parameters(params_file, names, overrides)
        problems += security_problems(names if names is not None else nodes_in_config(params_file))
        graph = None if problems else ProcessGraph(params_file, names, overrides)
    except (ValueError, OSError) as e:
        print(f"l1flow run: {e}", file=sys.stderr)
        return 2
    if graph is None:
        print(f"l1flow run: {len(problems)} problem(s); no node started:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    print("l1flow run: " + " ".join(f"{k}={v}" for k, v in net.items()), flush=True)
    for line in graph_warnings(params_file, names, overrides):
        print(f"l1flow run: warning: {line}", file=sys.stderr, flush=True)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    try:
        try:
            graph.start()
        except GraphError as e:
            print(f"l1flow run: {e}", file=sys.stderr)
            return 1
        if stop.is_set():
            return 0
        pids = ", ".join(f"{n} (pid {p.popen.pid})" for n, p in graph.procs.items())
        print(f"l1flow run: running {pids}; Ctrl-C stops", flush=True)
        gone = graph.wait(timeout=duration, stop_event=stop)
        if gone is not None:
            rc = graph.procs[gone].returncode()
            print(f"l1flow run: {gone} exited with code {rc}; stopping the graph", file=sys.stderr)
            return 1
        return 0
    finally:
        codes = graph.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        bad = {n: c for n, c in codes.items() if c not in (0, None)}
        print(f"l1flow run: stopped after {time.monotonic() - t0:.1f} s"
              + (f"; exit codes {bad}" if bad else ""), flush=True)
