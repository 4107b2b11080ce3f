"""How every l1flow node reports on /diagnostics: one DiagnosticStatus per message.

Each node builds its level, message and key/values; this publishes them the same way
everywhere (reliable, depth 10; values as strings; stamped with the node's clock) and
never raises during shutdown, when the publisher may already be gone.

Keys: one scheme, ``<quantity>_<unit>_<stat>`` (:data:`KEY`)
-----------------------------------------------------------------

- ``quantity``: lowercase snake_case words, what is measured or counted; a count is the
  plural of what it counts, with what happened to it (``chunks_accepted``, ``missed_ticks``).
- ``unit``, where the value has one: ``s``, ``ms``, ``us``, ``ns``, ``hz``; always right
  after the quantity (``chunk_age_ms``, ``rate_hz``).
- ``stat``, where the value summarises a window: ``p50``, ``p95``, ``p99`` (percentiles), ``max``,
  ``min``, ``mean``, ``last`` (the newest); always the last word, after the unit
  (``period_error_us_p99``, ``inference_ms_last``). ``last`` elsewhere is a plain word
  (``last_error``: the newest error's text).
- A key about one of several things of a kind (perception's streams) starts with that
  thing's name and a slash: ``<stream>/age_s``.

Counters count since the node started. Every key, per node (``<stage>`` and ``<stream>``
stand for each stage or stream; ``test/test_diagnostics_keys.py`` checks every key each node
publishes against :data:`KEY` and this table):

executor_node (``control/status.py`` ``summary``)

| key | unit | meaning |
|---|---|---|
| ``enabled`` | | the arm is handed to the policy (``/l1flow/executor/enable``) |
| ``mode`` | | the scheduler's mode: ``hold``, ``track`` or ``starved`` |
| ``output`` | | the command interface streamed to |
| ``rate_hz`` | Hz | the control rate |
| ``period_error_us_p50`` | us | control-period error abs(actual - nominal), median over the timing window |
| ``period_error_us_p99`` | us | the same, 99th percentile |
| ``period_error_us_max`` | us | the same, the largest |
| ``missed_ticks`` | | control deadlines slept through (skipped, never made up) |
| ``deadlines`` | | control deadlines so far: ticks plus missed ones |
| ``starvation_events`` | | times the plan ran out and the arm decelerated to a hold |
| ``chunk_age_ms`` | ms | now minus the running chunk's observation time (nan: none) |
| ``chunks_accepted`` | | chunks taken into the plan |
| ``chunks_rejected`` | | chunks refused (stale, future, wrong shape, outside limits, ...) |
| ``last_rejection`` | | why the newest refused chunk was refused |
| ``dropped_stale_actions`` | | actions of accepted chunks already due on arrival, dropped |
| ``limited_ticks`` | | ticks whose command the velocity / acceleration limits cut |
| ``replan_due`` | | a new chunk is due (n_action_steps of the running one are behind, or none runs) |
| ``inference_delay_steps_p95`` | | d = ceil((arrival - t_obs) / dt) of accepted chunks, 95th percentile over the last 64, the first 3 after enabling left out (``control/delay.py``); -1: none yet |
| ``obs_to_arrival_ms_p50`` | ms | observation time -> the chunk's arrival at the executor, median over the same window |
| ``obs_to_arrival_ms_p95`` | ms | the same, 95th percentile |
| ``boundary_velocity_step_max`` | units/s | largest change a splice made to the plan's reference velocity over the next chunk step (new plan against the old one at the same times; the first chunk after a start and grippers left out) |
| ``boundary_acceleration_max`` | units/s^2 | the same for the reference acceleration |
| ``boundary_velocity_step_p95`` | units/s | the same velocity change, 95th percentile over the last 512 boundaries |
| ``boundaries_spliced`` | | boundaries counted in the figures above |
| ``boundaries_on_plan`` | | those whose chunk was observed while a plan ran (at or after the arrival of the first chunk after a start): the only ones a prefix can agree with; the chunks in flight from before are left out |
| ``on_plan_boundary_velocity_step_max`` | units/s | ``boundary_velocity_step_max`` over the boundaries on a plan only |
| ``on_plan_boundary_velocity_step_p95`` | units/s | the same, 95th percentile over the last 512 of them |
| ``on_plan_boundary_acceleration_max`` | units/s^2 | ``boundary_acceleration_max`` over the boundaries on a plan only |
| ``control_thread`` | | how the control thread is scheduled (policy, priority, affinity) |
| ``executor_thread`` | | how the thread running the callbacks is scheduled |
| ``middleware_threads`` | | how the DDS threads are scheduled |

inference_node (``inference/service.py`` ``InferenceService.values``)

| key | unit | meaning |
|---|---|---|
| ``backend`` | | torch, onnxruntime or tensorrt |
| ``checkpoint`` | | path of the bundle in use |
| ``fingerprint`` | | its fingerprint (``-``: none) |
| ``pending_fingerprint`` | | the bundle a swap is loading (``-``: none) |
| ``sampler`` | | ``<kind>:<steps>`` of the policy in use |
| ``warm_start`` | | chunks start from the executor's unexecuted plan |
| ``prefix_conditioning`` | | chunks keep the executor's running plan for the inference delay (real-time chunking) |
| ``n_action_steps`` | | chunk steps between planning instants (0: every embedding) |
| ``delay_steps_last`` | | the inference delay d the last chunk was drawn with (empty: no prefix) |
| ``inject_delay_ms`` | ms | delay added to each inference (benchmarks; 0: off) |
| ``embeddings_skipped`` | | embeddings between planning instants, not used |
| ``inference_ms_last`` | ms | the newest embedding -> chunk time of the policy |
| ``inference_ms_p50`` | ms | the same, median over the window |
| ``inference_ms_p99`` | ms | the same, 99th percentile |
| ``inference_ms_max`` | ms | the same, largest |
| ``obs_to_chunk_ms_p50`` | ms | observation stamp -> chunk published, median |
| ``obs_to_chunk_ms_p99`` | ms | the same, 99th percentile |
| ``embeddings_overwritten`` | | embeddings replaced by a newer one before inference took them |
| ``chunks`` | | chunks published |
| ``unknown_fingerprint`` | | embeddings of another checkpoint, dropped |
| ``invalid_embedding`` | | embeddings of the wrong size or with NaN / inf, dropped |
| ``stale_embedding`` | | embeddings older than max_observation_age, dropped |
| ``invalid_tail`` | | executor tails that could not be used, ignored |
| ``failed_inference`` | | embeddings whose inference raised |
| ``swaps`` | | checkpoint swaps completed |
| ``lifecycle_state`` | | the node's lifecycle state (unconfigured, inactive, active, ...), as get_state answers |

perception_node (``perception/pipeline.py`` ``PerceptionEngine.values``)

| key | unit | meaning |
|---|---|---|
| ``fingerprint`` | | the encoder's checkpoint fingerprint (empty: none loaded) |
| ``backend`` | | the encoder's backend |
| ``embeddings_published`` | | embeddings published |
| ``sets_dropped`` | | complete sensor sets replaced by a newer one before the worker encoded them |
| ``<stage>_ms_p50`` | ms | per embedding stage (decode, fuse, encode, total, latency), median |
| ``<stage>_ms_p99`` | ms | the same, 99th percentile |
| ``<stream>/age_s`` | s | time since the stream's newest valid message (``never``: none yet) |

sim_robot_node (``nodes/sim_robot_node.py`` over ``sim/robot.py`` ``SimRobot.status``)

| key | unit | meaning |
|---|---|---|
| ``task`` | | the Meta-World task |
| ``episode`` | | the episode number |
| ``seed`` | | the episode's seed |
| ``step`` | | environment steps in this episode |
| ``success`` | | the task is solved |
| ``truncated`` | | the episode reached its step limit |
| ``target`` | | the task's goal position (m) |
| ``physics_steps`` | | physics steps since start |
| ``physics_overruns`` | | times the physics fell behind real time and resynchronised |
| ``frames`` | | camera frame sets rendered and published |
| ``frames_dropped`` | | due frame sets dropped while the renderer was busy |
| ``bad_commands`` | | commands rejected |
| ``last_error`` | | why the newest rejected command was rejected |

teleop_node (``nodes/teleop_node.py``)

| key | unit | meaning |
|---|---|---|
| ``mode`` | | joy, leader or expert |
| ``enabled`` | | commands are sent |
| ``commands_sent`` | | commands published |
| ``bad_inputs`` | | input messages rejected |
| ``last_error`` | | why the newest rejected input was rejected |

recorder_node (``nodes/recorder_node.py``)

| key | unit | meaning |
|---|---|---|
| ``recording`` | | an episode is being recorded |
| ``file`` | | the episode file being written (empty: none) |
| ``messages`` | | messages in that episode |
| ``messages_on_disk`` | | of those, written and fsync'ed (a kill keeps them) |
| ``episodes_saved`` | | episode files in the output folder |
| ``episodes_discarded`` | | episodes discarded since start |
| ``last_file`` | | the newest episode file saved |
| ``leftovers_recovered`` | | cut-off ``.part`` files rewritten into ``recovered/`` since start |
| ``leftovers_unrecovered`` | | cut-off ``.part`` files moved to ``corrupt/`` or left in place (disk full) |
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from l1flow_ros.msgs.chunk_conv import ns_to_stamp
from l1flow_ros.nodes.qos import RELIABLE_10 as QOS

TOPIC = "/diagnostics"
# How long a node keeps reporting an error after the last bad input (a message it rejected,
# a failed render or inference): long enough that a 1 Hz diagnostics reader sees it, short
# enough that recovery shows within two readings. Every node uses this one window.
ERROR_HOLD_S = 2.0
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR

UNITS = ("s", "ms", "us", "ns", "hz")
STATS = ("p50", "p95", "p99", "max", "min", "mean", "last")
_UNIT, _STAT = "|".join(UNITS), "|".join(STATS)
_WORD = rf"(?!(?:{_UNIT}|p\d+|max|min|mean)(?:_|$))[a-z][a-z0-9]*"  # "last" may be a word
# A subject (a stream name) may not end in a unit or stat: "age_s/front" is the old order.
_SUBJECT = rf"(?![A-Za-z0-9_]*_(?:{_UNIT}|{_STAT})/)[A-Za-z0-9_]+"
KEY = re.compile(rf"^(?:{_SUBJECT}/)*{_WORD}(?:_{_WORD})*(?:_(?:{_UNIT}))?(?:_(?:{_STAT}))?$")
"""Every /diagnostics key of every node matches this (the scheme above)."""


class Diagnostics:
    """The /diagnostics publisher of one node, reporting under ``name``."""

    def __init__(self, node: Node, name: str, hardware_id: str = "l1flow") -> None:
        self._node = node
        self.name = name
        self.hardware_id = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, TOPIC, QOS)

    def publish(self, level: bytes, message: str, values: Mapping[str, object],
                stamp_ns: int | None = None, hardware_id: str | None = None) -> None:
        """One status: ``level`` (OK / WARN / ERROR), ``message``, ``values`` (str() of each)."""
        st = DiagnosticStatus(level=level, name=self.name, message=message,
                              hardware_id=self.hardware_id if hardware_id is None else hardware_id)
        st.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = (ns_to_stamp(stamp_ns) if stamp_ns is not None
                            else self._node.get_clock().now().to_msg())
        try:
            self._pub.publish(arr)
        except Exception:  # the publisher is gone: the node is shutting down
            pass
