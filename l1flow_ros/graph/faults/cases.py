"""The cases: each injects one fault, watches, clears it and waits for normal operation
(:class:`~l1flow_ros.graph.faults.case.CaseContext`); :data:`CASES` in suite order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from l1flow_ros.graph.faults.assets import JOINTS, MAX_VEL, OTHER_GPU, PERIOD_S
from l1flow_ros.graph.faults.case import FAULT_S, HOLD_S, Case, CaseContext
from l1flow_ros.graph.faults.harness import diag_value
from l1flow_ros.graph.soak import cpu_seconds


def _held(inject: Callable[[CaseContext], None] | None = None, **fault: Any) -> Callable[[CaseContext], None]:
    """Fault on; the arm must come to rest and stay there while ``inject`` sends bad messages
    (no valid data is on offer meanwhile); fault off; normal operation must resume."""

    def run(c: CaseContext) -> None:
        c.fault(**fault)
        c.settle()
        end = time.monotonic() + HOLD_S
        while time.monotonic() < end:
            if inject is not None:
                inject(c)
            time.sleep(HOLD_S / 5)
        if inject is not None:
            inject(c)
        c.wait_reason()
        c.end_hold()
        c.clear()
        c.wait_recovered()

    return run


def _camera_info_never(c: CaseContext) -> None:
    h = c.h
    with c.w.lock:
        info_sent = c.w.info_sent_ns >= h.started_ns["perception_node"]
    with c.ticks_not_judged("perception started (imports, encoder loaded and warmed)"):
        if info_sent:  # this perception process may have seen CameraInfo: start a new one, none sent
            c.w.set_sensors(camera_info=False)
            h.restart_node("perception_node")
            c.res.notes.append("perception node process restarted (SIGINT, then started again)")
        # The encoder loads once the inference node announces its bundle (seconds on a busy
        # machine): perception's /diagnostics then name its fingerprint.
        t = h.started_ns["perception_node"]
        if not h.wait(lambda: bool((h.last_values("perception_node", t) or {}).get("fingerprint")), 120.0):
            c.res.notes.append("perception reported no encoder 120 s after its start")
    c.fault(camera_info=False)
    c.settle()
    time.sleep(HOLD_S)
    c.wait_reason()
    c.end_hold()
    c.clear()
    c.wait_recovered()


def _emb_unknown(c: CaseContext) -> None:
    c.w.send_embedding("0123456789abcdef")


def _emb_nan(c: CaseContext) -> None:
    c.w.send_embedding(c.h.fingerprint, value=float("nan"))


def _emb_dim(c: CaseContext) -> None:
    c.w.send_embedding(c.h.fingerprint, dim=7)


def _chunk(offset_s: float = 0.0, **kw: Any) -> Callable[[CaseContext], None]:
    def inject(c: CaseContext) -> None:
        c.w.send_chunk(time.time_ns() + int(offset_s * 1e9), **kw)

    return inject


def _chunk_out_of_limits(c: CaseContext) -> None:
    """A valid chunk whose targets lie far outside the position limits: clamped, never sent."""
    c.fault(cameras=False)
    time.sleep(0.5)
    t0 = time.time_ns()
    for _ in range(4):
        c.w.send_chunk(time.time_ns(), target=(5.0, -5.0, 5.0, 5.0), fingerprint="faults:out_of_limits")
        time.sleep(0.2)
    c.w.controller.caught_up(time.time_ns())
    rep = c.w.controller.request(op="since", t=t0)
    p = np.asarray(rep["p"]).reshape(-1, len(JOINTS))
    if p.size:
        reached = ", ".join(f"{n} {lo:+.3f}..{hi:+.3f}" for n, lo, hi in zip(JOINTS, p.min(0), p.max(0)))
        c.behaviour = f"executor: clamped to the limits; commands spanned {reached}"
    c.clear()
    c.wait_recovered()


def _no_subscriber(c: CaseContext) -> None:
    c.fault()
    c.w.disconnect_controller()
    time.sleep(FAULT_S)
    c.wait_reason()
    c.clear()
    c.w.connect_controller()
    c.wait_recovered()


def _disable_enable(c: CaseContext) -> None:
    from std_srvs.srv import SetBool

    c.fault()
    ans = c.w.call(c.w.enable_cli, SetBool.Request(data=False))
    t_off = time.time_ns()
    c.answers.append(f"executor (service answer): {ans.message}")
    time.sleep(1.0)
    c.wait_reason()
    c.hold = (t_off + int(2 * PERIOD_S * 1e9), time.time_ns())
    c.expect_silence = True
    c.cleared_at = time.time_ns()
    ans = c.w.call(c.w.enable_cli, SetBool.Request(data=True))
    c.answers.append(f"executor (service answer): {ans.message}")
    c.wait_recovered()


def _inference_down(sig: int) -> Callable[[CaseContext], None]:
    """The graph's inference node process stopped with ``sig`` while the executor streams
    (SIGINT: a clean shutdown; SIGKILL: no clean shutdown, no last message); once the arm is
    held, a new process is started, configured and activated (the clear)."""

    def run(c: CaseContext) -> None:
        h = c.h
        pid = h.graph.procs["inference_node"].popen.pid
        c.fault()
        try:
            rc = h.stop_node("inference_node", sig)
            c.res.notes.append(f"inference node process {pid} stopped with {signal.Signals(sig).name}, exit code {rc}")
            c.settle()
            time.sleep(HOLD_S)
            c.wait_reason()
            c.end_hold()
        finally:
            c.clear()
            t = time.monotonic()
            with c.ticks_not_judged("the new inference process started, configured and activated"):
                h.restart_node("inference_node")
            c.res.notes.append(f"new inference node process configured and active {time.monotonic() - t:.1f} s "
                               "after its start")
        c.wait_recovered()

    return run


def _cpu_starvation(c: CaseContext) -> None:
    n = os.cpu_count() or 2
    h = c.h
    st0 = h.executor_state()
    d0, m0 = diag_value(st0.values, "deadlines"), diag_value(st0.values, "missed_ticks")
    c.fault()
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(4.0)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    t_end = time.time_ns()
    c.res.notes.append(f"{n} busy processes (one per core) for 4 s")
    # The executor's /diagnostics before the load and the first one after it: cumulative
    # counts, so the difference spans the whole load (and up to one diagnostics period more).
    st1 = h.executor_state(after_ns=t_end, timeout=10.0)
    if st1 is None:
        raise RuntimeError("no executor /diagnostics within 10 s after the load ended")
    dl, ms = diag_value(st1.values, "deadlines") - d0, diag_value(st1.values, "missed_ticks") - m0
    c.behaviour = (f"executor: streamed on; {ms:.0f} of {dl:.0f} control deadlines missed "
                   f"({100 * ms / max(dl, 1):.0f} %)")
    v = st1.values
    c.res.notes.append(f"executor period error over its timing window (/diagnostics): p50 "
                       f"{diag_value(v, 'period_error_us_p50'):.0f} us, p99 {diag_value(v, 'period_error_us_p99'):.0f} us, "
                       f"max {diag_value(v, 'period_error_us_max'):.0f} us")
    c.clear()
    c.wait_recovered()


def _swap(key: str) -> Callable[[CaseContext], None]:
    def run(c: CaseContext) -> None:
        from rcl_interfaces.msg import Parameter as ParamMsg
        from rcl_interfaces.msg import ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        c.fault()
        req = SetParameters.Request(parameters=[ParamMsg(name="checkpoint", value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=c.h.assets[key]))])
        ans = c.w.call(c.w.param_cli, req).results[0]
        c.answers.append(f"inference (parameter answer): {'accepted' if ans.successful else 'rejected'}: {ans.reason}")
        c.cleared_at = time.time_ns()
        time.sleep(0.5)
        with c.w.lock:
            fps = {fp for t, _, fp in c.w.chunks if t >= c.onset and not fp.startswith("faults:")}
        if fps - {c.h.fingerprint}:
            c.res.notes.append(f"chunks with other fingerprints: {sorted(fps)}")
            c.res.invalid_chunks += 1
        c.wait_reason()
        c.wait_recovered()

    return run


SWAPS = 10  # hot swaps between the two valid bundles in hot_swap_streaming
# Below this share of idle time on the CPUs the graph may use, over the swaps, chunk gaps
# are reported, not judged: a swap opens and warms up sessions in two nodes, and with no CPU
# to spare that work delays the running head's chunks (measured under taskset -c 0, where the
# graph wants ~1.5 cores: gaps of 0.4-3.9 s, 0.25-0.4 s between the swaps).
MIN_IDLE_PCT = 10.0
SWAP_SETTLE_S = 0.5  # a swap's window: from the set to this long after the new head's first chunk
SWAP_STREAM_S = 0.5  # then streaming on the new head this long more before the next swap
SWAP_TIMEOUT_S = 30.0  # the new head's first chunk must arrive within this after the set
# Command continuity: a step of at most max_velocity x (the period between the two commands,
# from their middleware source stamps, clipped to [T, 2 T]: the executor never integrates more
# than two periods in one tick) + CONTINUITY_SLACK x T. The slack covers the time between the
# executor reading its clock for a tick and publishing: a publish that waited shortens the next
# stamp interval by as much. On two cores shared with the swap's loading that wait reaches half
# a period and more (a quarter of T failed 1 run in 4 with one core busy: a 2 T step after a
# stalled tick whose predecessor was published 0.5 T late); one T is the guard's own rule 3.
CONTINUITY_SLACK = 1.0


def _set_checkpoint(c: CaseContext, path: str) -> Any:
    from rcl_interfaces.msg import Parameter as ParamMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    req = SetParameters.Request(parameters=[ParamMsg(name="checkpoint", value=ParameterValue(
        type=ParameterType.PARAMETER_STRING, string_value=path))])
    return c.w.call(c.w.param_cli, req).results[0]


def _hot_swap(c: CaseContext) -> None:
    """SWAPS swaps between two valid bundles (same specs, other weights) while the executor
    streams at 500 Hz. Each swap: the set is accepted; the new head's first chunk arrives;
    the executor's missed ticks over the swap's window (set -> first chunk + SWAP_SETTLE_S),
    beside the bare loop's: the ticks the case judges (``zero_ticks``: none allowed).
    In the swaps' windows, no gap between chunks longer than two planning periods
    (n_action_steps x dt), or than the longest between the swaps where the loaded machine
    gives longer ones without a swap; not judged when the machine had no CPU to spare
    (MIN_IDLE_PCT). Over the whole case: no chunk whose embedding (same observation stamp)
    carries another fingerprint than the chunk (decoded by the other head), and every
    command step within max_velocity x period (CONTINUITY_SLACK)."""
    from l1flow_ros.policy.manifest import read_manifest

    h, w = c.h, c.w
    paths = (h.assets["bundle"], h.assets["bundle_b"])
    mans = [read_manifest(p, check_weights=False) for p in paths]
    fps = [m.fingerprint for m in mans]
    plan_s = mans[0].action.n_action_steps * mans[0].action.dt
    c.fault()
    cpu0 = cpu_seconds(os.sched_getaffinity(0))  # the CPUs this graph may use
    per_swap: list[str] = []
    swap_missed, swap_floor, swap_s, first_s = 0, 0, 0.0, []
    windows: list[tuple[int, int]] = []  # (set, first chunk of the new head + SWAP_SETTLE_S), ns
    for i in range(SWAPS):
        k = (i + 1) % 2  # to B, back to A, ...: the suite goes on with A
        mark = c.tick_mark()
        t_set = time.time_ns()
        ans = _set_checkpoint(c, paths[k])
        if not ans.successful:
            c.res.failures.append(f"swap {i + 1} to {fps[k]} rejected: {ans.reason}")
            break
        first = None
        end = time.monotonic() + SWAP_TIMEOUT_S
        while first is None and time.monotonic() < end:
            time.sleep(0.01)
            with w.lock:
                first = min((pub for pub, _, fp in w.chunks[-50:] if pub >= t_set and fp == fps[k]), default=None)
        if first is None:
            c.res.failures.append(f"swap {i + 1}: no chunk of {fps[k]} within {SWAP_TIMEOUT_S:.0f} s of the set")
            break
        span = c.ticks_since(mark, first + int(SWAP_SETTLE_S * 1e9))
        if span is not None:
            m, f, s = span
            swap_missed, swap_floor, swap_s = swap_missed + m, swap_floor + f, swap_s + s
            per_swap.append(f"{m}/{f}")
        first_s.append((first - t_set) * 1e-9)
        windows.append((t_set, first + int(SWAP_SETTLE_S * 1e9)))
        time.sleep(SWAP_STREAM_S)
    c.cleared_at = time.time_ns()
    cpu1 = cpu_seconds(os.sched_getaffinity(0))
    idle = 100.0 * (cpu1[1] - cpu0[1]) / (cpu1[0] - cpu0[0]) if cpu1[0] > cpu0[0] else float("nan")
    c.tick_windows = (swap_missed, round(swap_s, 2), swap_floor)
    t0, t1 = c.onset, c.cleared_at
    with w.lock:
        chunks = [(pub, t, fp) for pub, t, fp in w.chunks if t0 <= pub <= t1 and not fp.startswith("faults:")]
        emb = {t: fp for _, t, fp in w.embeddings if not fp.startswith("faults:")}
    pub = np.sort(np.array([x[0] for x in chunks], dtype=np.int64))  # when the inference node published them
    gaps, gap_end = np.diff(pub) * 1e-9, pub[1:]
    in_swap = np.zeros(gaps.size, bool)
    for a, b in windows:
        in_swap |= (gap_end >= a) & (gap_end <= b)
    gap = float("inf")
    if in_swap.any():  # the longest, and where it lies: from the set, and from the new head's first chunk
        gap = float(gaps[in_swap].max())
        end_ns = int(gap_end[in_swap][int(np.argmax(gaps[in_swap]))])
        a, b = next((a, b) for a, b in windows if a <= end_ns <= b)
        c.res.notes.append(f"longest gap in a swap ended {(end_ns - a) * 1e-9:.2f} s after the set, "
                           f"{(end_ns - b) * 1e-9 + SWAP_SETTLE_S:+.2f} s from the new head's first chunk")
    # Beside it, the longest gap between the swaps: what the loaded machine gives without one.
    gap_between = float(gaps[~in_swap].max()) if (~in_swap).any() else 0.0
    other = [(t, fp, emb[t]) for _, t, fp in chunks if t in emb and emb[t] != fp]
    unmatched = sum(t not in emb for _, t, _ in chunks)
    w.controller.caught_up(t1)
    rep = w.controller.request(op="since", t=t0)
    ct = np.asarray(rep["t"], dtype=np.int64)
    cp = np.asarray(rep["p"], dtype=np.float64).reshape(-1, len(JOINTS))
    cs = np.asarray(rep["seq"], dtype=np.int64)
    m = ct <= t1
    ct, cp, cs = ct[m], cp[m], cs[m]
    ratio, step_t, over = 0.0, 0.0, 0
    if ct.size > 1:
        # The guard's rule 3: a step within max_velocity x (the time since the last command + slack);
        # after a stalled tick the limiter moves the command by max_velocity x the stall. ``g``
        # commands since the previous one received (a starved guard's reader drops some).
        g = np.maximum(np.diff(cs), 1) if (cs >= 0).all() else np.ones(ct.size - 1, np.int64)
        dt = np.clip(np.diff(ct) * 1e-9, g * PERIOD_S, 2 * g * PERIOD_S)[:, None]  # (N-1, 1)
        step = np.abs(np.diff(cp, axis=0)) / np.asarray(MAX_VEL)  # (N-1, A): seconds at max velocity
        share = (step / (dt + CONTINUITY_SLACK * PERIOD_S)).max(axis=1)  # of the allowed step
        ratio, step_t, over = float(share.max()), float(step.max() / PERIOD_S), int((share > 1 + 1e-9).sum())
    if idle < MIN_IDLE_PCT:  # idle != idle (unreadable) is judged
        c.res.notes.append(f"chunk gaps not judged: the CPUs this graph may use were {idle:.1f} % idle over the "
                           f"swaps (a swap's loading needs CPU to spare; under {MIN_IDLE_PCT:.0f} % there was none)")
    elif gap > max(2 * plan_s, gap_between):
        c.res.failures.append(f"a gap of {gap:.3f} s between chunks in a swap (limit 2 planning periods: "
                              f"{2 * plan_s:.2f} s, or the longest between swaps: {gap_between:.3f} s)")
    if other:
        c.res.failures.append(f"{len(other)} chunk(s) decoded by the other head (first: chunk {other[0][1]}, "
                              f"embedding {other[0][2]})")
    if over:
        c.res.failures.append(f"{over} command step(s) beyond max_velocity x period (largest {ratio:.2f} of the "
                              "allowed step)")
    n = len(first_s)
    c.behaviour = (f"{n} swaps A <-> B accepted; new head's first chunk {min(first_s, default=0):.2f}-"
                   f"{max(first_s, default=0):.2f} s after the set; longest chunk gap in a swap {gap:.3f} s (limit "
                   f"{2 * plan_s:.2f}; between swaps {gap_between:.3f}); {len(other)} of {len(chunks) - unmatched} chunks decoded by the other head; "
                   f"largest command step {step_t:.2f} x max_velocity x T ({ratio:.2f} of the allowed); ticks missed "
                   "in the swaps "
                   f"{swap_missed} (bare loop {swap_floor})")
    c.res.notes.append(c.behaviour)  # the table's column shortens it
    c.res.notes.append(f"missed ticks per swap, executor/bare loop: {', '.join(per_swap)}")
    if unmatched:
        c.res.notes.append(f"{unmatched} chunk(s) whose embedding the harness did not see (not judged)")
    c.wait_recovered()


def _set_inference(c: CaseContext, name: str, value: float) -> str:
    """Set one double parameter of the graph's inference node; its answer as text."""
    from rcl_interfaces.msg import Parameter as ParamMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    req = SetParameters.Request(parameters=[ParamMsg(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=float(value)))])
    ans = c.w.call(c.w.param_cli, req).results[0]
    return f"inference ({name} {value:g}): {'accepted' if ans.successful else 'rejected'} {ans.reason}".rstrip()


def _delay_jump(c: CaseContext) -> None:
    """Inference slows from 20 ms to 400 ms mid-episode (a GPU shared with another job, a
    thermal throttle): 400 ms is more than this bundle's whole chunk (8 x 50 ms), so every chunk
    arrives with nothing left to execute; the arm must come to rest and hold, the reason named,
    and streaming resume once inference is back at 20 ms."""
    c.answers.append(_set_inference(c, "inject_delay_ms", 20.0))
    time.sleep(1.0)  # streaming at 20 ms
    c.fault()
    c.answers.append(_set_inference(c, "inject_delay_ms", 400.0))
    c.settle()
    c.no_valid_data = False  # the observations stay valid: only their chunks come too late
    time.sleep(HOLD_S)
    c.wait_reason()
    c.end_hold()
    st = c.h.executor_state()
    rejected = diag_value(st.values, "chunks_rejected") if st is not None else float("nan")
    d = (c.h.last_values("inference_node", c.onset) or {}).get("delay_steps_last") or "(no prefix)"
    c.res.notes.append(f"inference drew its last chunk with d = {d} chunk steps; executor chunks rejected in all: "
                       f"{rejected:.0f}")
    c.cleared_at = time.time_ns()
    c.answers.append(_set_inference(c, "inject_delay_ms", 20.0))
    c.wait_recovered()
    c.answers.append(_set_inference(c, "inject_delay_ms", 0.0))


def _engine_other_gpu(c: CaseContext) -> None:
    """A cached TensorRT engine recorded for another GPU / TensorRT must be refused on its
    metadata, before anything is deserialised or any TensorRT call is made."""
    from l1flow_ros.inference.checkpoint import CheckpointRejected, validate_checkpoint
    from l1flow_ros.inference.engine_cache import DeviceIdentity
    from l1flow_ros.policy.manifest import read_manifest

    c.fault()
    device = _this_device()
    trt_before = "tensorrt" in sys.modules
    running = read_manifest(c.h.assets["bundle"], check_weights=False)
    try:
        validate_checkpoint(c.h.assets["other_gpu"], running, "tensorrt", allow_build=False, device=device)
        c.answers.append("validate_checkpoint: accepted (engine for another GPU not refused)")
    except CheckpointRejected as e:
        c.answers.append(f"validate_checkpoint: rejected: {e}")
    if not trt_before and "tensorrt" in sys.modules:
        c.answers.append("validate_checkpoint: TensorRT was imported to check the engine")
    c.res.notes.append(f"this machine: {device.gpu_name} / TensorRT {device.trt_version}; cached engine: "
                       f"{OTHER_GPU[0]} / TensorRT {OTHER_GPU[2]}")
    assert isinstance(device, DeviceIdentity)
    c.cleared_at = time.time_ns()
    c.wait_recovered()


def _this_device() -> Any:
    """This machine's GPU identity, or a stand-in on a machine without one (the check is the same)."""
    from l1flow_ros.inference.engine_cache import DeviceIdentity

    try:
        import torch

        if torch.cuda.is_available():
            from l1flow_ros.inference.trt_backend import device_identity

            return device_identity()
    except Exception:
        pass
    return DeviceIdentity("(no GPU here: stand-in identity)", "0.0", "none")


S = 1e9
CASES: tuple[Case, ...] = (
    Case("camera_info_never", "camera started without CameraInfo (perception restarted)", _camera_info_never,
         ("perception_node", r"CameraInfo"), needs_streaming=False),
    Case("camera_stops", "colour + depth stop until the arm is at rest + 0.8 s, then come back", _held(None, cameras=False),
         ("perception_node", r"last message .* ago")),
    Case("depth_nan", "depth image all NaN (32FC1)", _held(None, depth="nan"),
         ("perception_node", r"depth has no valid pixel")),
    Case("depth_inf", "depth image all +inf (32FC1)", _held(None, depth="inf"),
         ("perception_node", r"depth has no valid pixel")),
    Case("depth_zero", "depth image all 0 (16UC1)", _held(None, depth="zero"),
         ("perception_node", r"depth has no valid pixel")),
    Case("wrong_encoding", "colour image with encoding rgba8", _held(None, encoding="rgba8"),
         ("perception_node", r"encoding")),
    Case("wrong_size", "colour + depth 12 x 16 while CameraInfo says 24 x 32", _held(None, size=(12, 16)),
         ("perception_node", r"size|12|16")),
    Case("joint_states_missing", "/joint_states stops until the arm is at rest + 0.8 s", _held(None, joints=False),
         ("perception_node", r"joint_states")),
    Case("joint_names_unexpected", "/joint_states with joints j_unknown_0, j_unknown_1 only",
         _held(None, joint_names=("j_unknown_0", "j_unknown_1")), ("perception_node", r"joint")),
    Case("clock_jump_back", "stamps of all sensor data jump 30 s back (simulated time reset)",
         _held(None, stamp_offset_ns=int(-30 * S)), ("perception_node", r"jump|old")),
    Case("clock_jump_forward", "stamps of all sensor data jump 5 s ahead, then back",
         _held(None, stamp_offset_ns=int(5 * S)), ("perception_node", r"future|jump")),
    Case("embedding_unknown_fingerprint", "embeddings stamped with an unknown checkpoint fingerprint",
         _held(_emb_unknown, cameras=False), ("inference_node", r"unknown checkpoint")),
    Case("embedding_nan", "embedding with NaN values", _held(_emb_nan, cameras=False), ("inference_node", r"NaN")),
    Case("embedding_wrong_dim", "embedding with 7 values (the head expects 32)", _held(_emb_dim, cameras=False),
         ("inference_node", r"expects 32")),
    Case("chunk_nan", "action chunk with a NaN (other actions at the far corner)", _held(_chunk(nan=True), cameras=False),
         ("executor_node", r"NaN")),
    Case("chunk_wrong_dim", "action chunk with 3 dimensions (j0, j1, j2) at the far corner",
         _held(_chunk(names=("j0", "j1", "j2")), cameras=False), ("executor_node", r"names|missing")),
    Case("chunk_future", "action chunk stamped 5 s in the future, far corner", _held(_chunk(5.0), cameras=False),
         ("executor_node", r"future")),
    Case("chunk_too_old", "action chunk stamped 5 s ago, far corner", _held(_chunk(-5.0), cameras=False),
         ("executor_node", r"too_old")),
    Case("chunk_out_of_limits", "valid chunk asking for (5, -5, 5, 5): far outside the limits",
         _chunk_out_of_limits, None),
    Case("controller_no_subscriber", "the controller topic loses its subscribers for 1.6 s", _no_subscriber,
         ("executor_node", r"subscriber")),
    Case("swap_missing_path", "checkpoint parameter set to a path that does not exist", _swap("missing"),
         ("inference_node", r"does not exist")),
    Case("swap_corrupt", "checkpoint parameter set to a bundle with a truncated manifest", _swap("corrupt"),
         ("inference_node", r"manifest|JSON|corrupt|json")),
    Case("swap_other_dims", "checkpoint parameter set to a bundle with 3 action dimensions", _swap("other_dims"),
         ("inference_node", r"action names")),
    Case("swap_nan_weights", "checkpoint parameter set to a bundle with a NaN weight", _swap("nan_weights"),
         ("inference_node", r"NaN|nan")),
    Case("swap_engine_other_gpu", "TensorRT engine cache recorded for another GPU / TensorRT version",
         _engine_other_gpu, ("validate_checkpoint", r"rejected: .*another target")),
    Case("hot_swap_streaming", f"{SWAPS} swaps between two valid bundles (same specs, other weights) while "
         "streaming at 500 Hz", _hot_swap, None, zero_ticks=True),
    Case("delay_jump", "inference delay jumps from 20 ms to 400 ms mid-episode (longer than a chunk), "
         "then back", _delay_jump, ("inference_node", r"inference delay \d+ steps > n_action_steps")),
    Case("disable_enable", "execution disabled mid-chunk for 1 s, then enabled", _disable_enable,
         ("executor_node", r"disable")),
    Case("inference_restart", "inference node process stopped (SIGINT); once the arm is held, a new one "
         "started, configured + activated", _inference_down(signal.SIGINT), ("executor_node", r"starved")),
    Case("inference_killed", "inference node process killed (SIGKILL) while the executor streams; then started "
         "again", _inference_down(signal.SIGKILL), ("executor_node", r"starved")),
    Case("cpu_starvation", "one busy process per core for 4 s while streaming at 500 Hz", _cpu_starvation,
         None, judge_ticks=False),
)
CASE_NAMES = tuple(c.name for c in CASES)


def select(names: list[str] | None) -> list[Case]:
    if not names:
        return list(CASES)
    unknown = [n for n in names if n not in CASE_NAMES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; cases: {', '.join(CASE_NAMES)}")
    return [c for c in CASES if c.name in names]  # suite order: camera_info_never first
