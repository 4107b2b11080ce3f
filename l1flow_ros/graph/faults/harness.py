"""The node graph under test (one process per node), the world around it, and the case runner."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l1flow_ros.graph.faults.assets import (
    JOINTS,
    NODES,
    RATE_HZ,
    REALTIME_PRIORITY,
    RECORDED_CHUNKS,
    SPIN_US,
    build_assets,
    write_params,
)
from l1flow_ros.graph.faults.case import GRACE_S, HOLD_TOL, RECOVER_TIMEOUT_S, Case, CaseContext
from l1flow_ros.graph.faults.record_check import RecordingResult
from l1flow_ros.graph.faults.report import CaseResult
from l1flow_ros.graph.faults.world import World
from l1flow_ros.graph.soak import machine_cpu_s


def diag_value(values: dict[str, str], key: str) -> float:
    """One key of a /diagnostics status as a number (nan where missing or not a number)."""
    try:
        return float(values.get(key, "nan"))
    except ValueError:
        return float("nan")


@dataclass(frozen=True)
class ExecutorState:
    """One /diagnostics status of the executor node."""

    stamp_ns: int  # the status's header stamp: when the executor took these values
    mode: str  # hold | track | starved
    t_obs_ns: int | None  # observation stamp of the running chunk (stamp - chunk_age_ms)
    values: dict[str, str]


class Harness:
    """The node graph (one process per node), the world around it, and the case runner."""

    def __init__(self, assets: dict[str, str], log: Callable[[str], None] = print,
                 camera_info_at_start: bool = True) -> None:
        self.assets = assets
        self.log = log
        self.camera_info_at_start = camera_info_at_start
        self.rig: Any = None  # l1flow_ros.nodes.composition.Composition: the world's node spun here
        self.graph: Any = None  # l1flow_ros.graph.launcher.ProcessGraph
        self.started_ns: dict[str, int] = {}  # when each node's current process was started
        self.world: World | None = None
        self.floor: Any = None  # l1flow_ros.graph.faults.floor.Floor: the bare loop beside the executor
        self.fingerprint = ""
        self.exit_codes: dict[str, int] = {}
        self.results: list[CaseResult] = []  # every case run, in order

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start the world, then the nodes (one process each, the inference node configured and
        activated); with CameraInfo at start, wait until the graph streams. Call it from a
        thread that lives as long as the harness: the node processes are tied to it."""
        from l1flow_ros.graph.faults.floor import Floor
        from l1flow_ros.graph.launcher import ProcessGraph
        from l1flow_ros.nodes.composition import Composition
        from l1flow_ros.policy.manifest import read_manifest

        root = Path(self.assets["calibration"]).parent
        self.floor = Floor(RATE_HZ, REALTIME_PRIORITY, SPIN_US)
        self.rig = Composition().start()
        self.world = World(self.rig.context)
        self.world.set_sensors(camera_info=self.camera_info_at_start)
        self.rig.add(self.world.node)
        self.world.start()
        self.fingerprint = read_manifest(self.assets["bundle"], check_weights=False).fingerprint
        log_file = root / "nodes.log"
        self.log(f"faults: node output in {log_file}")
        self.graph = ProcessGraph(write_params(self.assets, root / "faults_graph.yaml"), NODES, log_file=log_file)
        t = time.time_ns()
        self.graph.start()
        self.started_ns = dict.fromkeys(NODES, t)
        if self.camera_info_at_start:
            if not self.wait(self.streaming, timeout):
                raise RuntimeError(f"the node graph did not start streaming (see {log_file})")

    def stop_node(self, name: str, sig: int) -> int:
        """Stop one node's process with ``sig`` (SIGKILL after 10 s); its exit code."""
        return self.graph.stop_node(name, sig)

    def restart_node(self, name: str) -> None:
        """Stop the node's process (SIGINT) if it runs and start a new one with the same
        parameters (the inference node configured and activated again)."""
        self.graph.restart_node(name)
        self.started_ns[name] = time.time_ns()

    def start_recording(self) -> str:
        """Open the recorder's episode (one over the whole suite); its answer."""
        from std_srvs.srv import Trigger

        ans = self.world.call(self.world.rec_start_cli, Trigger.Request(), timeout=30.0)
        if not ans.success:
            raise RuntimeError(f"the recorder did not start an episode: {ans.message}")
        return ans.message

    def stop_recording(self) -> RecordingResult:
        """Close the recorder's episode and compare the file with what was published
        (:mod:`.record_check`)."""
        from std_srvs.srv import Trigger

        from l1flow_ros.graph.faults.record_check import check_recording
        from l1flow_ros.graph.faults.world import CAMERA_TOPICS

        try:
            ans = self.world.call(self.world.rec_stop_cli, Trigger.Request(), timeout=30.0)
        except RuntimeError as e:
            return RecordingResult(error=str(e))
        if not ans.success:
            return RecordingResult(error=f"the recorder's stop failed: {ans.message}")
        path = ans.message.strip()
        js = self.world.controller.request(op="joint_states_sent")["js"]
        with self.world.lock:
            stamped = {t: list(self.world.sent[t]) for t in CAMERA_TOPICS}
            stamped[RECORDED_CHUNKS] = [(pub, t) for pub, t, _ in self.world.chunks]  # as published
        stamped["/joint_states"] = [tuple(x) for x in js]
        return check_recording(path, stamped)

    def close(self) -> None:
        if self.graph is not None:
            self.exit_codes = self.graph.stop()
        if self.world is not None:
            self.world.stop()
        if self.rig is not None:
            self.rig.close()
        if self.floor is not None:
            self.floor.close()

    # -- state queries (what the nodes publish) -----------------------------------------------

    @staticmethod
    def wait(cond: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(poll)
        return cond()

    def _executor_state(self, rx: int, stamp: int, values: dict[str, str]) -> ExecutorState:
        # chunk_age_ms = stamp - observation stamp of the running chunk, rounded to 0.1 ms: the
        # chunk on the wire whose stamp it names (within that rounding) gives the exact stamp.
        age = diag_value(values, "chunk_age_ms")
        t_obs = None
        if age == age:
            t_obs = stamp - int(round(age * 1e6))
            with self.world.lock:
                near = [t for _, t, _ in self.world.chunks[-200:] if abs(t - t_obs) <= 100_000]
            if near:
                t_obs = min(near, key=lambda t: abs(t - t_obs))
        return ExecutorState(stamp, values.get("mode", ""), t_obs, values)

    def executor_state(self, after_ns: int | None = None, timeout: float = 5.0) -> ExecutorState | None:
        """The executor's latest /diagnostics status; with ``after_ns``, wait (at most
        ``timeout``) for one stamped at or after it (None if none came)."""
        end = time.monotonic() + timeout
        while True:
            with self.world.lock:
                last = (self.world.diag_values.get("executor_node") or [None])[-1]
            if last is not None and (after_ns is None or last[1] >= after_ns):
                return self._executor_state(*last)
            if after_ns is None or time.monotonic() > end:
                return None
            time.sleep(0.01)

    def missed_ticks(self, after_ns: int | None = None) -> int:
        """The executor's missed control ticks (cumulative, from /diagnostics)."""
        st = self.executor_state(after_ns)
        v = diag_value(st.values, "missed_ticks") if st is not None else float("nan")
        return 0 if v != v else int(v)

    @staticmethod
    def _runs_chunk_since(st: ExecutorState | None, t_ns: int) -> bool:
        return st is not None and st.mode == "track" and st.t_obs_ns is not None and st.t_obs_ns >= t_ns

    def accepted_since(self, t_ns: int) -> bool:
        """The executor runs a chunk made from an observation stamped at or after ``t_ns``
        (its latest /diagnostics: mode track, header stamp - chunk_age_ms >= t_ns)."""
        return self._runs_chunk_since(self.executor_state(), t_ns)

    def first_accepted_since(self, t_ns: int) -> int | None:
        """The stamp of the first executor status (stamped at or after ``t_ns``) that reports
        running a chunk made from an observation stamped at or after ``t_ns``."""
        with self.world.lock:
            hist = list(self.world.diag_values.get("executor_node", ()))
        k = len(hist)
        while k > 0 and hist[k - 1][1] >= t_ns:
            k -= 1
        for rx, stamp, values in hist[k:]:
            if self._runs_chunk_since(self._executor_state(rx, stamp, values), t_ns):
                return stamp
        return None

    def last_level(self, node: str, since_ns: int) -> int | None:
        with self.world.lock:
            for t, name, lvl, _ in reversed(self.world.diags):
                if t < since_ns:
                    return None
                if name == node:
                    return lvl
        return None

    def last_values(self, node: str, since_ns: int) -> dict[str, str] | None:
        """The key/values of the node's latest status stamped at or after ``since_ns``."""
        with self.world.lock:
            hist = self.world.diag_values.get(node) or []
            return dict(hist[-1][2]) if hist and hist[-1][1] >= since_ns else None

    def streaming(self) -> bool:
        """Chunks from fresh observations reach the executor and perception reports OK."""
        now = time.time_ns()
        return self.accepted_since(now - int(0.3e9)) and self.last_level("perception_node", now - int(0.6e9)) == 0

    def healthy_since(self, t_ns: int) -> bool:
        return (self.accepted_since(t_ns) and self.last_level("perception_node", t_ns) == 0
                and self.last_level("inference_node", t_ns) == 0)

    def inference_state(self) -> str:
        """The inference node's lifecycle state: as its /diagnostics of the last 2 s say it
        (with one core kept busy, get_state was seen "not available" to this process for over
        a minute while the node ran), else asked through get_state."""
        from lifecycle_msgs.srv import GetState

        since = time.time_ns() - int(2e9)
        with self.world.lock:
            recent = [v for rx, _, v in self.world.diag_values.get("inference_node", ()) if rx > since]
        if recent and recent[-1].get("lifecycle_state"):
            return recent[-1]["lifecycle_state"]
        try:
            return self.world.call(self.world.state_cli, GetState.Request(), timeout=5.0).current_state.label
        except RuntimeError as e:
            return f"unknown ({e})"

    def alive_problems(self) -> list[str]:
        """Why the graph is not up, from outside: a node process that ended; a node silent on
        /diagnostics for 2 s; the executor's control deadlines not advancing (control thread
        gone); perception publishing no embeddings (its worker gone); the inference node
        not active (lifecycle get_state); the harness's own spinner gone."""
        out = [f"{n} exited with code {rc}" for n, rc in self.graph.exited().items()]
        if self.rig is None or not self.rig.alive():
            out.append("the harness's executor stopped")
        since = time.time_ns() - int(2e9)
        with self.world.lock:
            recent = {n: [v for rx, _, v in hist if rx > since] for n, hist in self.world.diag_values.items()}
        for name in NODES:
            if not recent.get(name):
                out.append(f"{name}: no /diagnostics for 2 s")
        for name, key, what in (("executor_node", "deadlines", "control deadlines"),
                                ("perception_node", "embeddings_published", "embeddings published")):
            vals = [diag_value(v, key) for v in recent.get(name, ())]
            if len(vals) >= 2 and not vals[-1] > vals[0]:
                out.append(f"{name}: {what} not advancing over the last 2 s ({vals[0]:.0f})")
        state = self.inference_state()
        if state != "active":
            out.append(f"inference_node: lifecycle state {state}")
        return out

    def nodes_alive(self) -> bool:
        return not self.alive_problems()

    # -- one case --------------------------------------------------------------------------------

    def _count_ticks(self, res: CaseResult, case: Case, st0: ExecutorState | None, floor0: tuple[int, int],
                     t_start: int, cpu0: tuple[float, float]) -> None:
        """The executor's missed ticks over the case (its cumulative count in the status
        before the case and the first one stamped after it: the span they cover is the
        case's duration), the bare loop's over the same span, and the machine's steal."""
        t_end = time.time_ns()
        cpu1 = machine_cpu_s()
        if cpu1[0] > cpu0[0]:
            res.steal_pct = round(100.0 * (cpu1[1] - cpu0[1]) / (cpu1[0] - cpu0[0]), 1)
        res.span_ns = (t_start, t_end)
        st1 = self.executor_state(after_ns=t_end, timeout=15.0)
        floor1 = self.floor.read()
        res.ticks_judged = case.judge_ticks
        res.zero_ticks = case.zero_ticks
        if st0 is None or st1 is None:
            res.duration_s = round((t_end - t_start) * 1e-9, 2)
            res.notes.append("no executor /diagnostics around the case: its missed ticks are unknown")
            res.missed_ticks = -1
            res.failures.append("missed ticks not measured")
            return
        m0, m1 = diag_value(st0.values, "missed_ticks"), diag_value(st1.values, "missed_ticks")
        res.missed_ticks = int(m1 - m0) if m0 == m0 and m1 == m1 else 0
        res.duration_s = round((st1.stamp_ns - st0.stamp_ns) * 1e-9, 2)
        res.floor_missed = floor1[0] - floor0[0] if self.floor.alive() else -1

    def _restart_exited(self, res: CaseResult) -> None:
        """A node process that ended (crashed) is reported with its last output and started
        again, so that the next case finds the whole graph."""
        for name in list(self.graph.exited()):
            res.notes.append(f"{name}'s last output: {_short(self.graph.tail(name, 5), 400)}")
            try:
                self.restart_node(name)
            except RuntimeError as e:
                res.notes.append(f"{name} could not be restarted: {e}")

    def run_case(self, case: Case) -> CaseResult:
        res = CaseResult(case.name, case.injected, expected=case.expect[1] if case.expect else "")
        w = self.world
        if case.needs_streaming and not w.sensors.camera_info:  # started without CameraInfo
            w.set_sensors(camera_info=True)
        if case.needs_streaming and not self.wait(self.streaming, RECOVER_TIMEOUT_S):
            res.not_run = "the graph was not streaming normally before the case"
            res.notes += self.alive_problems()
            res.nodes_alive = not res.notes
            self._restart_exited(res)
            self.results.append(res)
            return res
        rep0 = w.controller.request(op="report", cmd=1 << 62, viol=1 << 62)
        with w.lock:
            i_chunk, i_diag = len(w.chunks), len(w.diags)
        # The first case may start before the executor's first /diagnostics (a slow start on a
        # loaded machine): wait for one rather than leave the case's ticks unmeasured.
        st0 = self.executor_state() or self.executor_state(after_ns=0, timeout=30.0)
        floor0, cpu0 = self.floor.read(), machine_cpu_s()
        t_start = time.time_ns()
        ctx = CaseContext(self, res, t_start, case)
        try:
            case.run(ctx)
        except Exception as e:  # a harness failure is reported, never hidden
            res.not_run = f"harness error: {type(e).__name__}: {e}"
            w.clear_sensors()
            w.connect_controller()
        self._count_ticks(res, case, st0, floor0, t_start, cpu0)
        for what, m, f, s in ctx.unjudged:  # a node started beside the executor: reported, not judged
            res.notes.append(f"{m} missed ticks (bare loop {f}) in {s:.1f} s while {what}: reported, not judged")
            if res.missed_ticks >= 0:
                res.missed_ticks = max(0, res.missed_ticks - m)
                res.floor_missed = max(0, res.floor_missed - f) if res.floor_missed >= 0 else res.floor_missed
                res.duration_s = round(max(0.0, res.duration_s - s), 2)
        if ctx.tick_windows is not None:  # the case judges its own windows
            res.notes.append(f"over the whole case ({res.duration_s:.1f} s): {res.missed_ticks} missed ticks, bare "
                             f"loop {res.floor_missed}")
            res.missed_ticks, res.duration_s, res.floor_missed = ctx.tick_windows
        problems = self.alive_problems()
        res.nodes_alive = not problems
        res.notes += problems
        self._restart_exited(res)
        # Commands still on their way to the guard (a starved one gets them seconds late).
        if not w.controller.caught_up(res.span_ns[1]):
            res.notes.append("the guard got no command published after the case's end within 10 s")
        rep = w.controller.request(op="report", cmd=rep0["n_cmd"], viol=rep0["n_viol"])
        cmd_t = np.asarray(rep["t"], dtype=np.int64)
        cmd_p = np.asarray(rep["p"], dtype=np.float64).reshape(-1, len(JOINTS))
        viol = rep["violations"]
        res.lost_commands = rep["lost"] - rep0["lost"]
        with w.lock:
            chunks = w.chunks[i_chunk:]
            diags = w.diags[i_diag:]
            poisoned = set(w.poisoned_stamps)
            injected = set(w.injected_stamps)
        res.commands = int(cmd_t.size)
        res.outside_limits = len(viol)
        res.notes += [f"guard: {why}" for _, why in viol[:3]]
        # Chunks the inference node made from a poisoned observation or an injected embedding
        # (the harness's own chunks carry a "faults:" fingerprint).
        late = ctx.onset + int(GRACE_S * 1e9)
        bad = [(t_pub, t_obs) for t_pub, t_obs, fp in chunks
               if not fp.startswith("faults:") and (t_obs in poisoned or t_obs in injected
                                                    or (ctx.no_valid_data and late <= t_obs and t_pub <= ctx.cleared_at))]
        res.invalid_chunks = len(bad)
        res.notes += [f"chunk from invalid data: observation {(t_obs - ctx.onset) * 1e-6:.0f} ms after the fault "
                      f"began, published {(t_pub - ctx.onset) * 1e-6:.0f} ms after (cleared at "
                      f"{(ctx.cleared_at - ctx.onset) * 1e-6:.0f} ms)" for t_pub, t_obs in bad[:3]]
        if ctx.hold is not None:
            t0, t1 = ctx.hold
            m = (cmd_t >= t0) & (cmd_t <= t1)
            if ctx.expect_silence:
                res.arm_held = "yes (no commands)" if not m.any() else "no"
                res.from_invalid = int(m.sum())
            elif not m.any():
                res.arm_held = "no commands"
            else:
                dev = np.abs(cmd_p[m] - cmd_p[m][0]).max(axis=1)
                res.from_invalid = int((dev > HOLD_TOL).sum())
                res.arm_held = "yes" if res.from_invalid == 0 else "no"
        seen: list[str] = []  # distinct statuses, non-OK ones (the faults) for the report
        everything: list[str] = []
        for _, name, lvl, msg in diags:
            s = f"{name.replace('_node', '')}: {msg}"
            if s not in everything:
                everything.append(s)
            if lvl > 0 and s not in seen:
                seen.append(s)
        res.reasons = seen + ctx.answers
        if case.expect:
            node, pattern = case.expect
            prefix = node.replace("_node", "") + ": "
            # A status message may list several problems ("a; b"): the one that matches.
            hits = [prefix + part for s in everything + ctx.answers if s.startswith(prefix)
                    for part in s[len(prefix):].split("; ") if re.search(pattern, part)]
            res.reason_seen = bool(hits)
            res.behaviour = hits[0] if hits else "expected reason not seen; " + "; ".join(res.reasons[:2])
        else:
            res.reason_seen = True
            res.behaviour = "; ".join(res.reasons[:2]) or "no fault reported"
        if ctx.behaviour:
            res.behaviour = ctx.behaviour
        root = str(Path(self.assets["bundle"]).resolve().parent)
        res.behaviour = _short(res.behaviour.replace(root, "$WORKDIR"))
        res.reasons = [x.replace(root, "$WORKDIR") for x in res.reasons]
        res.notes = [x.replace(root, "$WORKDIR") for x in res.notes]
        if ctx.recovered_at is not None:
            res.recovered = True
            res.recover_s = round((ctx.recovered_at - ctx.cleared_at) * 1e-9, 2)
        res.judge()
        self.results.append(res)
        return res


def _short(text: str, n: int = 150) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def run_suite(cases: list[Case], workdir: str | Path,
              log: Callable[[str], None] = print) -> tuple[list[CaseResult], RecordingResult]:
    """Every case on one graph, with the recorder recording one episode over all of them;
    the case results and the recording check."""
    assets = build_assets(workdir, log)
    info_first = bool(cases) and cases[0].name == "camera_info_never"
    h = Harness(assets, log, camera_info_at_start=not info_first)
    results = []
    recording = RecordingResult(error="the recording did not start")
    try:
        log(f"faults: starting {', '.join(NODES)}, one process each")
        h.start()
        h.start_recording()
        for case in cases:
            r = h.run_case(case)
            log(f"  {r.name:<30} {'survived' if r.survived else 'FAILED'}  {r.behaviour}")
            results.append(r)
        recording = h.stop_recording()
        log(f"faults: messages lost in recording: {recording.summary()}")
        for r in results:  # where the recording lost them
            n = sum(r.span_ns[0] <= t <= r.span_ns[1] for t in recording.lost_at)
            if n:
                r.notes.append(f"the recorder lost {n} message(s) published during this case")
        if recording.lost_at:
            n = sum(not any(r.span_ns[0] <= t <= r.span_ns[1] for r in results) for t in recording.lost_at)
            if n:
                log(f"faults: {n} message(s) lost in recording between cases")
    finally:
        h.close()
        bad = {n: rc for n, rc in h.exit_codes.items() if rc != 0}
        log(f"faults: nodes stopped{f'; exit codes {bad}' if bad else ' (exit code 0 each)'}")
    return results, recording
