"""The simulated arm and the guard, in a process of their own (:func:`main`), and the
harness's handle on it (:class:`Controller`).

Guard rules, for every command on the controller topic (A = 4 action dimensions):

1. finite, A values;
2. inside the configured position limits: ``lower - 1e-9 <= p <= upper + 1e-9``;
3. per-step change: ``|p_k - p_prev| <= max_velocity * (clip(dt_src, g T, 2 g T) + T) + 1e-9``
   per dimension, with ``T`` the control period, ``dt_src`` the difference of the two
   commands' middleware source timestamps (stamped when published, so bunching on the
   way to the guard does not matter) and ``g`` the difference of their publication
   sequence numbers (commands lost in transport in between; 1 normally). The elapsed time
   is taken as at least one period per command and at most two: the executor never
   integrates more than two periods in one tick, so after a stall, or after a gap in the
   stream (disabled, no subscriber), a command may not leap. One more period of slack
   covers the time between the executor reading its clock and publishing. After the
   guard (re)subscribes, the first command is judged against the arm's position; after a
   silence in the stream (no command for ``RESTART_SILENCE_S``: disabled, no subscriber),
   against the positions ``/joint_states`` reported in the ``RESTART_SILENCE_S`` before
   it (any of them): the executor restarts from the measured position, and this arm, when
   its process is starved, reports a position some commands behind the last one it gets
   (a real controller would have executed those before the silence).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from l1flow_ros.graph.faults.assets import HOME, JOINT_HZ, JOINTS, LOWER, MAX_VEL, PERIOD_S, UPPER

RESTART_SILENCE_S = 0.5  # a pause in the command stream this long is a restart (module docstring, rule 3)


class ArmGuard:
    """The simulated arm and the guard, in a process of their own (:func:`main`), so that
    checking 500 commands a second does not compete with the harness's camera and probes for
    one interpreter. One subscription on the controller topic: the arm follows every command
    (a perfect position controller) and the guard checks it (the module docstring's rules);
    ``/joint_states`` at 100 Hz reports the arm's position. Driven by JSON lines on stdin (see
    :meth:`handle`)."""

    def __init__(self, context: Any) -> None:
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState

        self.node = Node("l1flow_faults_arm", context=context)
        self.lock = threading.Lock()
        self.arm = np.array(HOME, dtype=np.float64)
        self.js_on, self.js_names, self.js_offset = True, [*JOINTS, "right_j0"], 0
        self.cmd_t: list[int] = []  # middleware source time of each command, ns
        self.cmd_p: list[list[float]] = []
        self.cmd_seq: list[int] = []  # publication sequence number of each (-1: not given)
        self.violations: list[tuple[int, str]] = []
        self.lost = 0  # commands that never arrived (sequence-number gaps)
        self.js_sent: list[tuple[int, int]] = []  # (publish ns, stamp) of every /joint_states published
        # (publish ns, position) of the last 10 s of /joint_states: a command may be judged seconds
        # after it was published when this process is starved
        self._js_recent: deque[tuple[int, np.ndarray]] = deque(maxlen=int(10 * JOINT_HZ))
        self._prev: tuple[int | None, int | None, np.ndarray] = (None, None, self.arm.copy())
        self._qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        # History 100 (1 s at 100 Hz), deeper than a robot driver's usual 10: a reliable reader
        # starved for over 0.1 s (the recorder during a loaded run) still gets every sample, so
        # the recording check measures the recorder, not this publisher's history.
        self.pub_js = self.node.create_publisher(JointState, "/joint_states",
                                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.sub = None
        self.connect()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._js_loop, name="faults_arm", daemon=True)
        self._thread.start()

    def connect(self) -> None:
        from std_msgs.msg import Float64MultiArray

        with self.lock:
            self._prev = (None, None, self.arm.copy())  # the first command is judged against the arm
        if self.sub is None:
            self.sub = self.node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                                     self._on_command, self._qos)

    def disconnect(self) -> None:
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
            self.sub = None

    def _on_command(self, msg: Any, info: Any) -> None:
        t = int(info["source_timestamp"])
        seq = info.get("publication_sequence_number")
        p = np.asarray(msg.data, dtype=np.float64)
        with self.lock:
            why = None
            t0, seq0, p0 = self._prev
            gap = 1 if seq is None or seq0 is None else max(1, int(seq) - int(seq0))
            if seq is None and t0 is not None:  # no sequence numbers: infer lost commands from the time
                gap = max(1, int(round((t - t0) * 1e-9 / PERIOD_S)))
            if gap > 1:
                self.lost += gap - 1
            if p.shape != (len(JOINTS),) or not np.isfinite(p).all():
                why = f"not {len(JOINTS)} finite values: {list(msg.data)}"
            elif np.any(p < np.asarray(LOWER) - 1e-9) or np.any(p > np.asarray(UPPER) + 1e-9):
                why = f"outside position limits: {np.round(p, 4).tolist()}"
            else:
                # ``gap`` commands since the last one seen (lost ones in between), each at most two
                # periods of motion; at least one period each.
                dt = gap * PERIOD_S if t0 is None else min(max((t - t0) * 1e-9, gap * PERIOD_S), 2 * gap * PERIOD_S)
                step, what = np.abs(p - p0), "in one command"
                allowed = np.asarray(MAX_VEL) * (dt + PERIOD_S) + 1e-9
                if t0 is not None and t - t0 > RESTART_SILENCE_S * 1e9:  # a restart: from a reported position
                    reported = [q for ts, q in self._js_recent if t - RESTART_SILENCE_S * 1e9 <= ts <= t]
                    if reported:
                        steps = np.abs(np.asarray(reported) - p)  # (R, A)
                        step = steps[int(np.argmin(np.max(steps / allowed, axis=1)))]
                        what = "from every position /joint_states reported before the restart"
                if np.any(step > allowed):
                    j = int(np.argmax(step / allowed))
                    why = f"{JOINTS[j]} moved {step[j]:.5f} {what} (allowed {allowed[j]:.5f})"
            if why is not None:
                self.violations.append((t, why))
            if p.shape == (len(JOINTS),):
                self.cmd_t.append(t)
                self.cmd_p.append(p.tolist())
                self.cmd_seq.append(-1 if seq is None else int(seq))
                if np.isfinite(p).all():
                    self._prev = (t, None if seq is None else int(seq), p)
                    self.arm = np.clip(p, LOWER, UPPER)  # a real arm stops at its bounds

    def _js_loop(self) -> None:
        from l1flow_ros.msgs.sensor_conv import joint_state_to_msg

        next_t = time.monotonic()
        while not self._stop.is_set():
            with self.lock:  # stamped with the state it was read with: a change orders with stamps
                on, names, arm = self.js_on, list(self.js_names), self.arm.copy()
                stamp = time.time_ns() + self.js_offset
            if on:
                pos = [float(arm[JOINTS.index(n)]) if n in JOINTS else 0.0 for n in names]
                try:
                    self.pub_js.publish(joint_state_to_msg(names, pos, stamp))
                except Exception:  # the context is going down
                    return
                with self.lock:
                    sent = time.time_ns()  # the clock of the commands' source timestamps (stamps may be offset)
                    self.js_sent.append((sent, stamp))
                    self._js_recent.append((sent, arm))
            next_t += 1.0 / JOINT_HZ
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "joints":
            with self.lock:
                self.js_on, self.js_names, self.js_offset = bool(req["on"]), list(req["names"]), int(req["offset_ns"])
        elif op == "connect":
            self.connect()
        elif op == "disconnect":
            self.disconnect()
        elif op in ("since", "recent"):  # commands with source time >= t, or in the last ``window`` s received
            with self.lock:
                latest = self.cmd_t[-1] if self.cmd_t else 0
                t0 = int(req["t"]) if op == "since" else latest - int(float(req["window"]) * 1e9)
                k = len(self.cmd_t)
                while k > 0 and self.cmd_t[k - 1] >= t0:
                    k -= 1
                return {"t": self.cmd_t[k:], "p": self.cmd_p[k:], "seq": self.cmd_seq[k:], "latest": latest}
        elif op == "joint_states_sent":  # for the recording check
            with self.lock:
                return {"js": list(self.js_sent)}
        elif op == "report":
            i, j = int(req.get("cmd", 0)), int(req.get("viol", 0))
            with self.lock:
                return {"t": self.cmd_t[i:], "p": self.cmd_p[i:], "n_cmd": len(self.cmd_t),
                        "violations": self.violations[j:], "n_viol": len(self.violations), "lost": self.lost,
                        "arm": self.arm.tolist()}
        else:
            return {"error": f"unknown op {op!r}"}
        return {"ok": True}

    def close(self) -> None:
        """Stop the /joint_states thread (the node is destroyed by whoever spins it)."""
        self._stop.set()
        self._thread.join(timeout=2.0)


def main() -> int:
    """``python -m l1flow_ros.graph.faults --controller``: the ArmGuard process, driven by JSON
    lines on stdin (one answer line each on stdout), until ``quit`` or the end of stdin."""
    from l1flow_ros.nodes.composition import Composition

    with Composition() as rig:
        ag = ArmGuard(rig.context)
        rig.add(ag.node)
        print(json.dumps({"ok": True}), flush=True)
        try:
            for line in sys.stdin:
                req = json.loads(line)
                if req.get("op") == "quit":
                    break
                print(json.dumps(ag.handle(req)), flush=True)
        finally:
            ag.close()
    return 0


class Controller:
    """The main process's handle on the ArmGuard process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-m", "l1flow_ros.graph.faults", "--controller"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=dict(os.environ))
        if not self._read().get("ok"):
            raise RuntimeError("the arm / guard process did not start")

    def caught_up(self, t_ns: int, timeout: float = 10.0) -> bool:
        """Wait until the guard has a command published at or after ``t_ns`` (commands reach
        a starved guard late): whether it came within ``timeout``."""
        end = time.monotonic() + timeout
        while self.request(op="recent", window=0.0)["latest"] < t_ns:
            if time.monotonic() > end:
                return False
            time.sleep(0.02)
        return True

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the arm / guard process exited (code {self.proc.poll()})")
        return json.loads(line)

    def request(self, **req: Any) -> dict[str, Any]:
        with self.lock:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10.0)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
