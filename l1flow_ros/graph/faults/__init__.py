"""Fault injection through the real node graph: does the package fail safe?

The harness starts the real ``perception_node``, ``inference_node``, ``executor_node`` and ``recorder_node``
one OS process per node, as ``ros2 launch`` (and ``l1flow run``) starts them
(:class:`l1flow_ros.graph.launcher.ProcessGraph`: each node's console script with
``--params-file``, the lifecycle inference node configured and activated; a node is
stopped, killed or restarted as a process), on a small untrained bundle (one RGB-D camera
with points + end-effector proprioception, exported for ONNX Runtime on the CPU). The
nodes' parameters are written to a parameter file next to the bundle (``faults_graph.yaml``),
their output to ``nodes.log``. The harness plays the world around them itself:

- a camera: colour (rgb8), aligned depth (16UC1) and CameraInfo at 10 Hz;
- an arm: ``/joint_states`` at 100 Hz whose position is the last command received on the
  forward-position controller topic (a perfect position controller), clipped to its bounds;
- a GUARD on the controller topic that checks every command on its own, without the
  executor's bookkeeping (rules below). The arm and the guard run in a process of their
  own (:class:`ArmGuard`), apart from the harness's camera and probes.

The harness never looks inside a node. What it knows of the nodes comes from what they
publish and from the operating system: /diagnostics (every node's level, message and
key/values, published every ``DIAG_PERIOD_S``; the executor's ``mode``, ``chunk_age_ms``,
``missed_ticks``, ``deadlines``, ``period_error_*_us``; perception's ``fingerprint`` and
``embeddings_published``), the chunk topic, the controller topic (the guard), each node's
process (alive or its exit code), and the inference node's lifecycle ``get_state`` service.
"The executor runs a chunk made from an observation stamped at or after t" is: its latest
status has mode ``track`` and header stamp - ``chunk_age_ms`` >= t (snapped to the stamp
of the chunk seen on the wire within the 0.1 ms rounding). "Nodes up": every process
running, every node on /diagnostics within the last 2 s, the executor's control deadlines
and perception's published embeddings advancing, the inference node ``active``.

The executor runs as deployed (config/sim.yaml): its control thread at SCHED_FIFO 50 with a
200 us busy-wait. Beside it, a bare loop to the same deadlines at the same priority in a
process of its own (:mod:`.floor`) measures the machine's floor. ``recorder_node`` records
one episode over the whole suite (camera, /joint_states, commands); at the end the file is
compared with what was published (:mod:`.record_check`: messages lost in recording).

Each case: wait until the graph streams normally, inject the fault, watch, clear it, and
wait for normal operation (a chunk made from fresh data run by the executor, the
nodes' /diagnostics back to OK). Recorded per case: what was injected, whether the nodes
stayed up, the /diagnostics reason seen, whether the arm was held, commands outside the
limits, commands that moved the arm while only invalid or stale data was on offer, chunks
made from invalid observations, recovery and its time, and control ticks missed (the executor's, and the bare loop's over
the same span). A case survives only with at most 1 missed tick per 10 s of it (none in
``hot_swap_streaming``; ``cpu_starvation``'s are reported, not judged).

"Arm held" (cases where only invalid or no data is on offer): after the fault starts, the
arm must come to rest within ``SETTLE_MAX_S`` (the executor's starvation rule: the running
chunk ends, the command reaches its last waypoint within the limits and stops; "at rest" =
all commands of the last ``REST_S`` within ``HOLD_TOL``), and then stay within ``HOLD_TOL``
of that position for ``HOLD_S`` until the fault is cleared. A command outside is counted
as a command from invalid data (no valid data exists in that window). For injected bad
chunks and embeddings the sensors are paused, so the executor comes to rest, and the bad
messages are sent during the hold; a bad chunk asks for a far-away position (``POISON``):
executing it would move the arm. Chunks on the wire made by the inference node from an
observation stamped after the fault began (``GRACE_S``), or from a stamp the harness
poisoned or an embedding it injected, are counted as chunks from invalid data.

The modules, by role: :mod:`.assets` (the bundles and the nodes' parameter file), :mod:`.guard`
(the arm and the guard's process, and the guard's rules), :mod:`.world` (the camera, probes and
injections), :mod:`.floor` (the bare loop), :mod:`.record_check` (the recording against what was
published), :mod:`.case` (what a case function uses), :mod:`.cases` (the cases),
:mod:`.harness` (the graph and the case runner) and :mod:`.report` (results and the table).

Run it: ``l1flow faults`` (all cases) or ``l1flow faults --cases camera_stops,chunk_nan``;
``--markdown FILE`` / ``--json FILE`` write the table. ROS traffic stays on this machine
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) on a domain of its own, so a real arm on the
network never hears it.
"""

from __future__ import annotations

from l1flow_ros.graph.faults.assets import HOME, MAX_VEL, NODES, PERIOD_S, UPPER, build_assets, write_params
from l1flow_ros.graph.faults.case import Case, CaseContext
from l1flow_ros.graph.faults.cases import CASE_NAMES, CASES, select
from l1flow_ros.graph.faults.guard import ArmGuard
from l1flow_ros.graph.faults.harness import Harness, run_suite
from l1flow_ros.graph.faults.report import CaseResult, Totals, markdown, results_json, totals, write_markdown

__all__ = [
    "CASES", "CASE_NAMES", "HOME", "MAX_VEL", "NODES", "PERIOD_S", "UPPER", "ArmGuard", "Case", "CaseContext",
    "CaseResult", "Harness", "Totals", "build_assets", "markdown", "results_json", "run_suite", "select",
    "totals", "write_markdown", "write_params",
]
