"""Control-loop jitter of executor_node: period error p50 / p99 / max and missed ticks.

Runs the real ExecutorNode (rclpy, Fast DDS on loopback, its own domain), enabled and
streaming forward-position commands while a chunk publisher stands in for the inference
node (a new 16-step chunk at --chunk-hz, so the executor splices and publishes as in
deployment). Each configuration is measured side by side in one run:

- rate: 500 Hz and 1 kHz;
- load: ``idle``; ``cpu`` = one CPU-busy process per core (numpy matmul; stands in for an
  inference process on the same machine); ``gil`` = a pure-Python busy thread in the
  executor's own process (stands in for inference composed into the same process, which
  competes for the GIL);
  ``inference`` = the real inference_node in another process (torch on CPU, the default-size
  untrained L1 Flow bundle, embeddings at 30 Hz): its chunks drive the executor;
- spin: busy-wait for the last ``spin_us`` before each deadline, or sleep all the way.

Period error = |time between consecutive wake-ups - nominal period|. A missed tick is a
deadline skipped because the thread woke more than one period late. Each row also measures
the floor of the machine under the same load: a bare Python thread that only sleeps to the
same deadlines ("bare loop"); the ratio shows what the node adds to it.

``--process`` runs the executor as deployed, one process per node: ``python -m
l1flow_ros.nodes.executor_node`` (its own main(): executor thread + control thread) in a
child process; this process stands in for the arm (``/joint_states`` at ``--joint-hz``,
a subscriber on the command topic) and for inference (the chunk publisher; with load
``inference`` the real inference node in a third process), and reads the child's timing
from its ``/diagnostics``: missed ticks and deadlines over the measured time exactly, max
over the whole time, p50 / p99 over the node's last window (8192 periods: the last 16 s at
500 Hz). The floor is the bare loop in a process of its own over the same seconds, at the
same priority (a stall of the whole machine shows in both). The child is stopped with
SIGINT; its exit code and any failed publish are reported. ``gil`` does not apply (nothing
else runs in the child).

    python bench/bench_jitter.py                        # all configurations, 8 s each
    python bench/bench_jitter.py --seconds 4 --loads idle cpu --rates 500
    python bench/bench_jitter.py --realtime-priority 80  # SCHED_FIFO if permitted
    python bench/bench_jitter.py --process --seconds 32 --rates 500 --spins 200 --loads idle cpu \
        --realtime-priority 50
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import threading
import time

from l1flow_ros.graph.launcher import private_domain_id  # no rclpy: the domain is set before it loads

os.environ.setdefault("ROS_DOMAIN_ID", str(private_domain_id(os.getpid())))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

import numpy as np


def _cpu_burner(stop: mp.Event) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    a = np.random.default_rng(0).normal(size=(192, 192))
    while not stop.is_set():
        for _ in range(20):
            a = np.tanh(a @ a.T * 1e-3)


def _gil_burner(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x = (x * 31 + i) % 1_000_003


def _inference_load(stop, ready, embed_hz: float) -> None:
    """The real inference_node (torch, CPU, the package's default-size untrained L1 Flow
    bundle) fed embeddings at ``embed_hz``: its chunks drive the executor under test."""
    import tempfile

    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from l1flow_ros.inference.synthetic import default_bench_bundle
    from l1flow_ros.msgs.chunk_conv import embedding_to_msg
    from l1flow_ros.nodes.composition import Composition
    from l1flow_ros.nodes.inference_node import InferenceNode

    with tempfile.TemporaryDirectory() as tmp, Composition() as rig:
        bundle = os.path.join(tmp, "bundle")
        default_bench_bundle(bundle, "default")
        node = InferenceNode(context=rig.context, parameter_overrides=[Parameter("checkpoint", value=str(bundle))])
        for step in (node.trigger_configure, node.trigger_activate):
            assert step() == TransitionCallbackReturn.SUCCESS, step.__name__
        head = node.service.active
        feeder = rclpy.create_node("bench_embedding_feeder", context=rig.context)
        pub = feeder.create_publisher(Image, "/l1flow/embedding", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        rig.add(node, feeder)
        ready.set()
        rng = np.random.default_rng(0)
        while not stop.is_set():
            e = rng.normal(size=head.embed_dim).astype(np.float32)
            pub.publish(embedding_to_msg(e, feeder.get_clock().now().nanoseconds, head.fingerprint))
            time.sleep(1.0 / embed_hz)


def _bare_loop(rate: float, spin_us: int, seconds: float, rt_prio: int = 0, stop=None) -> tuple[np.ndarray, int]:
    """The floor: a Python thread that only sleeps to the same absolute deadlines (at the
    control thread's SCHED_FIFO priority when one is given): |period error| in us, missed.
    Runs ``seconds``, or until ``stop`` (an Event) is set when one is given."""
    from l1flow_ros.control.loop import sleep_until as _sleep_until

    if rt_prio > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_prio))
        except (OSError, AttributeError):
            pass
    period = int(round(1e9 / rate))
    errs: list[int] = []
    missed = 0
    nxt, last = time.monotonic_ns() + period, 0
    end = time.monotonic_ns() + int(seconds * 1e9)
    while nxt < end and not (stop is not None and stop.is_set()):
        _sleep_until(nxt, spin_us * 1000)
        wake = time.monotonic_ns()
        if last:
            errs.append(wake - last - period)
        last = wake
        if wake - nxt >= period:
            missed += (wake - nxt) // period
            nxt += (wake - nxt) // period * period
        nxt += period
    return np.abs(np.array(errs)) * 1e-3, missed


def _start_load(load: str, embed_hz: float = 30.0) -> tuple[object, list]:
    if load == "inference":
        ctx_mp = mp.get_context("spawn")
        stop, ready = ctx_mp.Event(), ctx_mp.Event()
        proc = ctx_mp.Process(target=_inference_load, args=(stop, ready, embed_hz), daemon=True)
        proc.start()
        if not ready.wait(120):
            raise RuntimeError("the inference node did not come up")
        return stop, [proc]
    if load == "cpu":
        ctx_mp = mp.get_context("spawn")
        stop = ctx_mp.Event()
        workers = [ctx_mp.Process(target=_cpu_burner, args=(stop,), daemon=True) for _ in range(os.cpu_count() or 1)]
    else:
        stop = threading.Event()
        workers = [threading.Thread(target=_gil_burner, args=(stop,), daemon=True)] if load == "gil" else []
    for w in workers:
        w.start()
    return stop, workers


def _floor_process(rate: float, spin_us: int, seconds: float, rt_prio: int, out, stop=None) -> None:
    """The bare loop alone in a process of its own (no other thread, no GIL to wait for);
    also used by bench_graph.py beside each evaluation, stopped by ``stop``."""
    t0 = time.monotonic()
    e, missed = _bare_loop(rate, spin_us, seconds, rt_prio, stop)
    out.put({"p99": float(np.percentile(e, 99)), "max": float(e.max()), "missed": int(missed),
             "seconds": time.monotonic() - t0})


def measure_bare(rate: float, load: str, spin_us: int, seconds: float, rt_prio: int = 0) -> dict[str, float]:
    stop, workers = _start_load(load)
    time.sleep(1.0)
    out = [None]
    t = threading.Thread(target=lambda: out.__setitem__(0, _bare_loop(rate, spin_us, seconds, rt_prio)))
    t.start()
    t.join()
    stop.set()
    for w in workers:
        w.join(timeout=5)
    e, missed = out[0]
    return {"p50": float(np.percentile(e, 50)), "p99": float(np.percentile(e, 99)), "max": float(e.max()),
            "missed": missed}


def measure(rate: float, load: str, spin_us: int, seconds: float, chunk_hz: float, rt_prio: int,
            affinity: list[int], switch_interval: float = 0.0001) -> dict[str, float]:
    import rclpy
    from rclpy.parameter import Parameter
    from trajectory_msgs.msg import JointTrajectory

    from l1flow_ros.msgs.chunk_conv import chunk_to_msg
    from l1flow_ros.nodes.composition import Composition
    from l1flow_ros.nodes.executor_node import ExecutorNode
    from l1flow_ros.spec import Chunk

    # With the real inference node the executor runs its chunks (the bundle's 4 EE actions);
    # otherwise a 7-joint arm fed by the stand-in below.
    names = ["ee_x", "ee_y", "ee_z", "gripper"] if load == "inference" else ["j1", "j2", "j3", "j4", "j5", "j6", "gripper"]
    dim = len(names)
    rig = Composition().start()
    ctx = rig.context
    params = {
        "joint_names": names, "rate_hz": rate, "spin_us": spin_us, "gripper_joints": ["gripper"],
        "max_velocity": [1.0] * dim, "max_acceleration": [10.0] * dim, "lower": [-3.0] * dim, "upper": [3.0] * dim,
        "realtime_priority": rt_prio, "cpu_affinity": affinity, "diagnostics_period": 1.0,
        "python_switch_interval": switch_interval,
    }
    sys.setswitchinterval(0.005)  # the interpreter default; the node lowers it as configured
    node = ExecutorNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    feeder = rclpy.create_node("bench_chunk_feeder", context=ctx)
    pub = feeder.create_publisher(JointTrajectory, "/l1flow/action_chunk", 1)
    rig.add(node, feeder)
    node._stream.set_measured(np.zeros(len(names)), time.monotonic())  # as if /joint_states had arrived
    assert node._enable(True)[0]

    stop_load, workers = _start_load(load)
    rng = np.random.default_rng(0)
    time.sleep(1.0)  # settle (discovery, load start-up)
    node._loop.reset_timing()
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        t = node.get_clock().now().nanoseconds
        if load != "inference":
            a = np.cumsum(rng.normal(scale=0.01, size=(16, len(names))), axis=0)
            pub.publish(chunk_to_msg(Chunk(t, 0.1, a, tuple(names))))
        time.sleep(1.0 / chunk_hz)
    err = np.abs(node._loop.period_errors_ns()) * 1e-3  # us
    missed = node._loop.timing_stats()["missed_ticks"]
    sched = node._scheduler.stats()
    accepted, rejected = sched.accepted, sum(sched.rejected.values())
    stop_load.set()
    for w in workers:
        w.join(timeout=5)
    rig.close()  # the spin loops stop before the nodes are closed and destroyed
    return {
        "periods": len(err), "p50": float(np.percentile(err, 50)), "p99": float(np.percentile(err, 99)),
        "max": float(err.max()), "missed": missed, "chunks": accepted, "rejected": rejected,
    }


def _ros_list(values: list) -> str:
    return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in values) + "]"


def measure_process(rate: float, load: str, spin_us: int, seconds: float, chunk_hz: float, rt_prio: int,
                    affinity: list[int], switch_interval: float = 0.0001, joint_hz: float = 100.0) -> dict[str, float]:
    """executor_node as its own process (its console-script main()), timed from its /diagnostics."""
    import signal
    import subprocess
    import tempfile

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import SetBool
    from trajectory_msgs.msg import JointTrajectory

    from l1flow_ros.msgs.chunk_conv import chunk_to_msg
    from l1flow_ros.nodes.composition import Composition
    from l1flow_ros.spec import Chunk

    names = ["ee_x", "ee_y", "ee_z", "gripper"] if load == "inference" else ["j1", "j2", "j3", "j4", "j5", "j6", "gripper"]
    dim = len(names)
    params = {
        "joint_names": _ros_list(names), "rate_hz": repr(float(rate)), "spin_us": str(spin_us),
        "gripper_joints": '["gripper"]', "max_velocity": _ros_list([1.0] * dim),
        "max_acceleration": _ros_list([10.0] * dim), "lower": _ros_list([-3.0] * dim),
        "upper": _ros_list([3.0] * dim), "realtime_priority": str(rt_prio), "diagnostics_period": "1.0",
        "python_switch_interval": repr(float(switch_interval)),
    }
    if affinity:
        params["cpu_affinity"] = _ros_list([int(c) for c in affinity])
    cli = [x for k, v in params.items() for x in ("-p", f"{k}:={v}")]
    log = tempfile.TemporaryFile(mode="w+")
    child = subprocess.Popen([sys.executable, "-m", "l1flow_ros.nodes.executor_node", "--ros-args", *cli],
                             stdout=log, stderr=subprocess.STDOUT)
    rig = Composition().start()
    io = rclpy.create_node("bench_arm_and_chunks", context=rig.context)
    diags: list[dict[str, str]] = []
    n_cmds = [0]

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == "executor_node":
                d = {kv.key: kv.value for kv in st.values}
                d.setdefault("received", str(time.monotonic()))
                diags.append(d)

    io.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    out = io.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                 lambda m: n_cmds.__setitem__(0, n_cmds[0] + 1), QoSProfile(depth=10))
    pub = io.create_publisher(JointTrajectory, "/l1flow/action_chunk",
                              QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    js_pub = io.create_publisher(JointState, "/joint_states", 10)
    enable = io.create_client(SetBool, "/l1flow/executor/enable")
    rig.add(io)
    stop_js = threading.Event()
    js = JointState(name=list(names), position=[0.0] * dim)

    def joint_states() -> None:  # the arm's state stream, at its own rate
        nxt = time.monotonic()
        while not stop_js.is_set():
            js_pub.publish(js)
            nxt += 1.0 / joint_hz
            time.sleep(max(0.0, nxt - time.monotonic()))

    stop_load, workers = None, []
    try:
        end = time.monotonic() + 60
        while not (enable.service_is_ready() and out.get_publisher_count() > 0 and pub.get_subscription_count() > 0):
            if time.monotonic() > end or child.poll() is not None:
                raise RuntimeError("executor_node did not come up")
            time.sleep(0.05)
        if joint_hz > 0:
            threading.Thread(target=joint_states, daemon=True).start()
        for _ in range(200):
            if joint_hz <= 0:
                js_pub.publish(js)
            fut = enable.call_async(SetBool.Request(data=True))
            while not fut.done():
                time.sleep(0.01)
            if fut.result().success:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"executor_node would not enable: {fut.result().message}")
        stop_load, workers = _start_load(load)
        rng = np.random.default_rng(0)
        time.sleep(2.0)  # settle (discovery, load start-up)
        n0 = len(diags)
        while len(diags) == n0:  # the first report after settling is the baseline
            time.sleep(0.01)
        d0 = diags[-1]
        # The machine's floor over the same seconds: what a stall of the whole VM costs shows
        # in both columns.
        ctx_mp = mp.get_context("spawn")
        floor_q = ctx_mp.Queue()
        floor = ctx_mp.Process(target=_floor_process, args=(rate, spin_us, seconds, rt_prio, floor_q), daemon=True)
        floor.start()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            if load != "inference":
                a = np.cumsum(rng.normal(scale=0.01, size=(16, dim)), axis=0)
                pub.publish(chunk_to_msg(Chunk(io.get_clock().now().nanoseconds, 0.1, a, tuple(names))))
            time.sleep(1.0 / chunk_hz)
        n1 = len(diags)
        while len(diags) == n1:
            time.sleep(0.01)
        d1 = diags[-1]
        during = diags[n0 - 1:]
        floor_result = floor_q.get(timeout=seconds + 60)
        floor.join(timeout=10)
    finally:
        if stop_load is not None:
            stop_load.set()
        for w in workers:
            w.join(timeout=5)
        stop_js.set()
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
        try:
            rc = child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            rc = child.wait()
        rig.close()
    log.seek(0)
    text = log.read()
    f = lambda d, k: float(d.get(k, "nan"))  # noqa: E731
    return {
        # Deadlines from the node's count; from the time between both reports where it has none.
        "periods": int(f(d1, "deadlines") - f(d0, "deadlines") if "deadlines" in d1
                       else round((f(d1, "received") - f(d0, "received")) * rate)),
        "p50": f(d1, "period_error_us_p50"),
        "p99": f(d1, "period_error_us_p99"), "max": max(f(d, "period_error_us_max") for d in during),
        "missed": f(d1, "missed_ticks") - f(d0, "missed_ticks"),
        "chunks": int(f(d1, "chunks_accepted") - f(d0, "chunks_accepted")),
        "rejected": int(f(d1, "chunks_rejected") - f(d0, "chunks_rejected")),
        "exit": rc, "clean": rc == 0 and "Failed to publish" not in text and "Traceback" not in text,
        "thread": d1.get("control_thread", ""), "floor": floor_result,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured time per configuration")
    ap.add_argument("--rates", type=float, nargs="+", default=[500.0, 1000.0])
    ap.add_argument("--loads", nargs="+", default=["idle", "cpu", "gil", "inference"],
                    choices=["idle", "cpu", "gil", "inference"])
    ap.add_argument("--spins", type=int, nargs="+", default=[200, 0], help="busy-wait before deadlines (us)")
    ap.add_argument("--chunk-hz", type=float, default=10.0, help="chunks per second from the stand-in inference")
    ap.add_argument("--realtime-priority", type=int, default=0)
    ap.add_argument("--cpu-affinity", type=int, nargs="*", default=[])
    ap.add_argument("--switch-interval", type=float, default=0.0001,
                    help="the node's python_switch_interval (s): GIL hand-over to the control thread")
    ap.add_argument("--process", action="store_true",
                    help="run executor_node as its own process (as deployed) instead of in this one")
    ap.add_argument("--joint-hz", type=float, default=100.0, help="--process: rate of /joint_states (0 = once)")
    args = ap.parse_args(argv)
    if args.process:
        return _main_process(args)

    _header("", args, "", ["rate Hz", "load", "spin us", "periods", "p50 us", "p99 us", "max us", "missed ticks",
                          "chunks run / rejected", "bare-loop p99 us", "p99 / bare p99"])
    for rate in args.rates:
        for spin in args.spins:
            for load in args.loads:
                r = measure(rate, load, spin, args.seconds, args.chunk_hz, args.realtime_priority,
                            args.cpu_affinity, args.switch_interval)
                b = measure_bare(rate, load, spin, args.seconds, args.realtime_priority)
                print(f"| {rate:.0f} | {load} | {spin} | {r['periods']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                      f"{r['max']:.1f} | {r['missed']:.0f} | {r['chunks']} / {r['rejected']} | {b['p99']:.1f} | "
                      f"{r['p99'] / b['p99']:.2f} |",
                      flush=True)
    return 0


def _header(what: str, args: argparse.Namespace, extra: str, columns: list[str]) -> None:
    """The machine, the command and the table head of a run."""
    print(f"# executor jitter{what}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {args.seconds:.0f} s per row{extra}")
    print(f"# command: python bench/bench_jitter.py {' '.join(sys.argv[1:])}".rstrip())
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def _main_process(args: argparse.Namespace) -> int:
    loads = [x for x in args.loads if x != "gil"]  # nothing else runs inside the child
    _header(", one process per node", args, f", /joint_states at {args.joint_hz:g} Hz, chunks at {args.chunk_hz:g} Hz",
            ["rate Hz", "load", "spin us", "periods", "p50 us", "p99 us", "max us", "missed ticks", "missed / min",
             "chunks run / rejected", "exit", "floor p99 us", "floor max us", "floor missed", "control thread"])
    for rate in args.rates:
        for spin in args.spins:
            for load in loads:
                r = measure_process(rate, load, spin, args.seconds, args.chunk_hz, args.realtime_priority,
                                    args.cpu_affinity, args.switch_interval, args.joint_hz)
                b = r["floor"]
                per_min = r["missed"] / max(r["periods"], 1) * rate * 60
                print(f"| {rate:.0f} | {load} | {spin} | {r['periods']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                      f"{r['max']:.1f} | {r['missed']:.0f} | {per_min:.1f} | {r['chunks']} / {r['rejected']} | "
                      f"{r['exit']}{'' if r['clean'] else ' (unclean)'} | {b['p99']:.1f} | {b['max']:.1f} | "
                      f"{b['missed']} | {r['thread']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
