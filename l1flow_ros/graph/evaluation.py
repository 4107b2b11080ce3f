"""Evaluate a bundle through the full node graph on the simulated arm.

sim_robot_node -> perception_node -> inference_node -> executor_node -> sim_robot_node,
one process per node (:class:`l1flow_ros.graph.launcher.ProcessGraph`, as ``l1flow run sim``
and ``ros2 launch l1flow_ros sim.launch.py`` start them), from the same parameter file. This
process only watches and drives episodes (one probe node, brought up by
:class:`~l1flow_ros.nodes.composition.Composition`). Per episode: disable the executor, reset
the sim (next seed), enable the executor, wait for success or the time limit.

Measured on the wire: success per episode, observation -> chunk latency (chunk publish
time minus its observation stamp) split into where it goes (observation stamp -> the
camera frame on the wire -> the embedding on the wire -> the chunk on the wire), the
inference node's own inference time, and the executor's control-period error, from
/diagnostics.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from l1flow_ros.graph import config_path, nodes_in_config, parameter_value
from l1flow_ros.graph.launcher import ProcessGraph
from l1flow_ros.msgs.chunk_conv import stamp_to_ns
from l1flow_ros.nodes import qos
from l1flow_ros.nodes.composition import Composition, call_service

EE = ("ee_x", "ee_y", "ee_z", "gripper")


FIRST_CHUNK_TIMEOUT_S = 180.0  # from the nodes' activation to the first action chunk


@dataclass
class EvalResult:
    task: str
    bundle: str
    episodes: int
    successes: int
    success_rate: float
    episode_s: list[float] = field(default_factory=list)
    chunk_latency_ms_p50: float = float("nan")  # observation stamp -> chunk on the wire
    chunk_latency_ms_p99: float = float("nan")
    frame_latency_ms_p50: float = float("nan")  # observation stamp -> camera frame on the wire
    frame_latency_ms_p99: float = float("nan")
    embedding_latency_ms_p50: float = float("nan")  # observation stamp -> embedding on the wire
    embedding_latency_ms_p99: float = float("nan")
    perception_ms_p50: float = float("nan")  # perception node's own work per observation
    inference_ms_p50: float = float("nan")  # inference node's own timing (last window)
    inference_ms_p99: float = float("nan")
    sampler: str = ""
    period_error_us_p50: float = float("nan")  # executor control-period error
    period_error_us_p99: float = float("nan")
    period_error_us_max: float = float("nan")
    missed_ticks: int = 0  # while the episodes ran (from the first chunk to the end)
    missed_ticks_per_min: float = float("nan")
    measured_s: float = 0.0  # the window the counts cover
    inference_delay_steps_p95: int = -1  # the executor's delay estimate d (control/delay.py); -1: none
    boundary_velocity_step_max: float = float("nan")  # executor: command velocity change after a splice
    boundary_acceleration_max: float = float("nan")  # executor: command acceleration after a splice
    boundary_velocity_step_p95: float = float("nan")
    boundaries_on_plan: int = 0  # boundaries whose chunk was observed while a plan ran (the executor's)
    on_plan_boundary_velocity_step_max: float = float("nan")  # the same figures over those only
    on_plan_boundary_velocity_step_p95: float = float("nan")
    on_plan_boundary_acceleration_max: float = float("nan")
    overrides: list[str] = field(default_factory=list)  # node parameters set for this run
    chunks: int = 0
    graph: str = "process per node"  # or "one process" (composition, for side-by-side benchmarks)

    def table(self) -> str:
        rows = [
            ("task", self.task),
            ("bundle", self.bundle),
            ("sampler", self.sampler),
            ("success", f"{self.successes}/{self.episodes} ({100 * self.success_rate:.0f} %)"),
            ("chunks received", str(self.chunks)),
            ("obs -> chunk latency p50 / p99", f"{self.chunk_latency_ms_p50:.1f} / {self.chunk_latency_ms_p99:.1f} ms"),
            ("  obs -> frame p50 / p99", f"{self.frame_latency_ms_p50:.1f} / {self.frame_latency_ms_p99:.1f} ms"),
            ("  obs -> embedding p50 / p99", f"{self.embedding_latency_ms_p50:.1f} / {self.embedding_latency_ms_p99:.1f} ms"),
            ("inference delay d p95 (executor)", f"{self.inference_delay_steps_p95} chunk steps"),
            ("chunk boundaries: max velocity step / acceleration",
             f"{self.boundary_velocity_step_max:.3f} /s / {self.boundary_acceleration_max:.1f} /s^2"),
            ("perception time p50", f"{self.perception_ms_p50:.2f} ms"),
            ("inference time p50 / p99", f"{self.inference_ms_p50:.2f} / {self.inference_ms_p99:.2f} ms"),
            ("control period error p50 / p99 / max",
             f"{self.period_error_us_p50:.0f} / {self.period_error_us_p99:.0f} / {self.period_error_us_max:.0f} us"),
            ("missed control ticks", f"{self.missed_ticks} in {self.measured_s:.0f} s "
                                     f"({self.missed_ticks_per_min:.1f} per minute)"),
            ("graph", self.graph),
        ]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


class _Probe(Node):
    """Watches the graph from outside: success, chunks, commands, joint states, diagnostics."""

    def __init__(self, camera: str = "", **kwargs) -> None:
        super().__init__("l1flow_eval", **kwargs)
        latched = qos.LATCHED
        self.lock = threading.Lock()
        self.success = False
        self.latency_ms: list[float] = []
        self.frame_ms: list[float] = []
        self.embedding_ms: list[float] = []
        self.diag: dict[str, dict[str, str]] = {}
        self.record = False
        self.commanded: list[tuple[float, list[float]]] = []
        self.executed: list[tuple[float, list[float]]] = []
        self.create_subscription(Bool, "/sim/success", self._on_success, latched)
        self.create_subscription(JointTrajectory, "/l1flow/action_chunk", self._age_into(self.latency_ms), 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.create_subscription(Image, "/l1flow/embedding", self._age_into(self.embedding_ms), 10)
        if camera:
            self.create_subscription(Image, f"/{camera}/color/image_raw", self._age_into(self.frame_ms),
                                     qos.SENSOR)
        # Depth 1: a busy process must not replay a backlog (which would show as a fake lag).
        self.create_subscription(Float64MultiArray, "/forward_position_controller/commands", self._on_cmd, 1)
        self.create_subscription(JointState, "/joint_states", self._on_js, 1)
        self.reset_cli = self.create_client(Trigger, "/sim/reset")
        self.enable_cli = self.create_client(SetBool, "/l1flow/executor/enable")

    def _on_success(self, msg: Bool) -> None:
        with self.lock:
            self.success = bool(msg.data)

    def _age_into(self, into: list[float]):
        """A callback appending each message's age (now - header stamp, ms) to ``into``."""
        def cb(msg) -> None:
            lat = (self.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) * 1e-6
            with self.lock:
                into.append(lat)
        return cb

    def clear_latencies(self) -> None:
        with self.lock:
            for x in (self.latency_ms, self.frame_ms, self.embedding_ms):
                x.clear()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for st in msg.status:
                self.diag[st.name] = {kv.key: kv.value for kv in st.values}

    def _on_cmd(self, msg: Float64MultiArray) -> None:
        if self.record:
            self.commanded.append((time.monotonic(), list(msg.data)))

    def _on_js(self, msg: JointState) -> None:
        if self.record and all(n in msg.name for n in EE):
            idx = [list(msg.name).index(n) for n in EE]
            # Measured at the sim's stamp, mapped onto this process's monotonic clock.
            age = (self.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) * 1e-9
            self.executed.append((time.monotonic() - age, [msg.position[i] for i in idx]))


def _missed(probe: _Probe) -> int:
    """The executor's missed-tick count (cumulative since it started) as last reported."""
    with probe.lock:
        v = _f(probe.diag.get("executor_node", {}), "missed_ticks")
    return 0 if np.isnan(v) else int(v)


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else float("nan")


def _int(x: float, missing: int = -1) -> int:
    return missing if math.isnan(x) else int(x)


def _f(d: dict[str, str], k: str) -> float:
    try:
        return float(d.get(k, "nan"))
    except ValueError:
        return float("nan")


def graph_overrides(bundle: str, manifest, seed: int, task: str | None = None,
                    backend: str | None = None) -> list[str]:
    """The node parameters that put ``bundle`` (its cameras) on the simulated arm."""
    cams = ",".join(manifest.observation.cameras) or '""'
    out = [
        f"inference_node:checkpoint:={bundle}",
        f"sim_robot_node:seed:={int(seed)}",
        f"sim_robot_node:cameras:=[{cams}]",
    ]
    if task:
        out.append(f"sim_robot_node:task:={task}")
    if backend:
        out.append(f"inference_node:backend:={backend}")
        out.append(f"perception_node:encoder_backend:={backend}")
    return out


def wait_first_chunk(probe: _Probe, graph) -> None:
    """Wait for the first chunk: perception has loaded the encoder the inference node
    announced, and the chain is live. A node that dies ends the wait at once (graph.check);
    a slow start does not: on one shared core (taskset -c 0) loading the encoder and the
    policy beside the simulator took over a minute."""
    t_end = time.monotonic() + FIRST_CHUNK_TIMEOUT_S
    while not probe.latency_ms and time.monotonic() < t_end:
        graph.check()
        time.sleep(0.05)
    if not probe.latency_ms:
        raise RuntimeError(f"no action chunk within {FIRST_CHUNK_TIMEOUT_S:.0f} s: is the graph running? "
                           "(see /diagnostics)")


def run_episode(probe: _Probe, graph, episode_timeout: float, record: bool = False) -> tuple[bool, float]:
    """One episode: disable the executor, reset the sim (its next seed), enable, wait for
    success or ``episode_timeout``; (success, seconds)."""
    call_service(probe.enable_cli, SetBool.Request(data=False))
    # Commands already queued for the sim would drag the reset arm back to the last
    # episode's goal: let them drain before the reset.
    time.sleep(0.3)
    call_service(probe.reset_cli, Trigger.Request())
    with probe.lock:
        probe.success = False
    time.sleep(0.4)  # fresh observations of the new episode before the arm moves
    probe.record = record
    t0 = time.monotonic()
    call_service(probe.enable_cli, SetBool.Request(data=True))
    while time.monotonic() - t0 < episode_timeout and not probe.success:
        time.sleep(0.02)
    graph.check()
    probe.record = False
    with probe.lock:
        success = probe.success
    return success, time.monotonic() - t0


def evaluate_graph(
    bundle: str | Path,
    task: str | None = None,
    episodes: int = 5,
    seed: int = 100000,
    episode_timeout: float = 12.0,
    config: str | Path = "sim",
    backend: str | None = None,
    plot: str | Path | None = None,
    log=print,
    log_file: str | Path | None = None,
    composed: bool = False,
    overrides: Sequence[str] = (),
) -> EvalResult:
    """Run ``episodes`` seeded episodes of ``bundle`` through the node graph of ``config``.

    The nodes' own output goes to ``log_file`` (each line prefixed with the node's name), or to
    standard output when None. ``composed``: every node in this process instead
    (:class:`~l1flow_ros.nodes.composition.Composition`, as the tests compose nodes), to
    measure the difference side by side; deployments run one process per node. ``overrides``:
    more node parameters, ``node:name:=value`` (e.g. ``executor_node:splice:=replace``).
    """
    from l1flow_ros.policy.manifest import read_manifest

    bundle = str(Path(bundle).resolve())
    manifest = read_manifest(bundle)
    path = config_path(config)
    names = nodes_in_config(path)
    extra = list(overrides)
    overrides = graph_overrides(bundle, manifest, seed, task, backend) + extra
    sim_task = task or parameter_value(path, "sim_robot_node", "task")
    # Left in reverse: the graph stops first, then the probe.
    with contextlib.ExitStack() as stack:
        rig = stack.enter_context(Composition())
        if composed:
            graph = stack.enter_context(Composition(args=["--ros-args", "--params-file", str(path)]))
            graph.start_nodes(names, overrides)
        else:
            graph = stack.enter_context(ProcessGraph(path, names, overrides, log_file=log_file))
        probe = _Probe(camera=next(iter(manifest.observation.cameras), ""), context=rig.context)
        rig.add(probe)
        wait_first_chunk(probe, graph)
        probe.clear_latencies()
        missed0 = _missed(probe)
        t_measure = time.monotonic()
        ok, durations = 0, []
        for ep in range(episodes):
            success, dur = run_episode(probe, graph, episode_timeout, record=ep == 0)
            ok += int(success)
            durations.append(round(dur, 2))
            log(f"episode {ep + 1}/{episodes}: {'success' if success else 'failure'} in {dur:.1f} s")
        call_service(probe.enable_cli, SetBool.Request(data=False))
        time.sleep(1.1)  # one more diagnostics period
        with probe.lock:
            lat = np.asarray(probe.latency_ms, dtype=np.float64)
            frame = np.asarray(probe.frame_ms, dtype=np.float64)
            emb = np.asarray(probe.embedding_ms, dtype=np.float64)
            inf_d = dict(probe.diag.get("inference_node", {}))
            ex_d = dict(probe.diag.get("executor_node", {}))
            per_d = dict(probe.diag.get("perception_node", {}))
        measured_s = time.monotonic() - t_measure
        missed = max(_missed(probe) - missed0, 0)
        res = EvalResult(
            task=str(sim_task), bundle=bundle, episodes=episodes, successes=ok,
            success_rate=ok / max(episodes, 1), episode_s=durations,
            chunk_latency_ms_p50=_pct(lat, 50), chunk_latency_ms_p99=_pct(lat, 99),
            frame_latency_ms_p50=_pct(frame, 50), frame_latency_ms_p99=_pct(frame, 99),
            embedding_latency_ms_p50=_pct(emb, 50), embedding_latency_ms_p99=_pct(emb, 99),
            perception_ms_p50=_f(per_d, "total_ms_p50"),
            inference_ms_p50=_f(inf_d, "inference_ms_p50"), inference_ms_p99=_f(inf_d, "inference_ms_p99"),
            sampler=inf_d.get("sampler", ""),
            period_error_us_p50=_f(ex_d, "period_error_us_p50"),
            period_error_us_p99=_f(ex_d, "period_error_us_p99"),
            period_error_us_max=_f(ex_d, "period_error_us_max"),
            inference_delay_steps_p95=_int(_f(ex_d, "inference_delay_steps_p95")),
            boundary_velocity_step_max=_f(ex_d, "boundary_velocity_step_max"),
            boundary_acceleration_max=_f(ex_d, "boundary_acceleration_max"), overrides=extra,
            boundary_velocity_step_p95=_f(ex_d, "boundary_velocity_step_p95"),
            boundaries_on_plan=_int(_f(ex_d, "boundaries_on_plan")),
            on_plan_boundary_velocity_step_max=_f(ex_d, "on_plan_boundary_velocity_step_max"),
            on_plan_boundary_velocity_step_p95=_f(ex_d, "on_plan_boundary_velocity_step_p95"),
            on_plan_boundary_acceleration_max=_f(ex_d, "on_plan_boundary_acceleration_max"),
            missed_ticks=missed, missed_ticks_per_min=60.0 * missed / max(measured_s, 1e-9),
            measured_s=round(measured_s, 1), chunks=int(lat.size),
            graph="one process" if composed else "process per node",
        )
        if plot:
            _plot(Path(plot), probe.commanded, probe.executed, lat, res)
        return res


def _plot(path: Path, commanded, executed, latency_ms: np.ndarray, res: EvalResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    if commanded and executed:
        t0 = min(commanded[0][0], executed[0][0])
        tc = np.array([t for t, _ in commanded]) - t0
        c = np.array([v for _, v in commanded])
        te = np.array([t for t, _ in executed]) - t0
        e = np.array([v for _, v in executed])
        for i, (name, col) in enumerate(zip(EE[:3], ("C0", "C1", "C2"))):
            ax.plot(tc, c[:, i], color=col, lw=1.0, label=f"{name} commanded")
            ax.plot(te, e[:, i], color=col, lw=2.0, ls="--", alpha=0.7, label=f"{name} executed")
    ax.set_xlabel("time in episode 1 (s)")
    ax.set_ylabel("end-effector position (m)")
    ax.set_title("commanded (500 Hz executor) vs executed (sim)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    if latency_ms.size:
        ax.hist(latency_ms, bins=40, color="C3")
    ax.set_xlabel("observation -> action chunk (ms)")
    ax.set_ylabel("chunks")
    ax.set_title(f"latency ({res.sampler}): p50 {res.chunk_latency_ms_p50:.1f} ms, "
                 f"p99 {res.chunk_latency_ms_p99:.1f} ms")
    fig.suptitle(f"{res.task}: success {res.successes}/{res.episodes}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def result_json(res: EvalResult) -> str:
    return json.dumps(asdict(res), indent=2)
