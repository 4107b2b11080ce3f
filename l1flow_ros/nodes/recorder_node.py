"""Records demonstrations: one MCAP file (a valid ROS 2 bag) per episode.

Records, while an episode is open, every message of: per camera ``<cam>``
/<cam>/color/image_raw, /<cam>/aligned_depth_to_color/image_raw, /<cam>/color/camera_info;
/joint_states; the commanded actions (``action_topic``, default
/forward_position_controller/commands); and ``extra_topics`` ("topic:pkg/msg/Type").
Messages are stored as received (CDR bytes of a raw subscription: no decode, no copy
through Python objects), log time = receive time.

Services (std_srvs/Trigger): /recorder/start opens an episode, /recorder/stop closes it
(the response message is the file path), /recorder/discard drops it. Episode metadata
(task; success: true / false from ``success_topic``, null when nothing was heard on it,
e.g. on a real arm — ``l1flow dataset build`` skips only episodes marked false; times)
goes into the file. A user judging demonstrations by eye keeps them with stop and drops
them with discard.

Nothing recorded is lost to a crash or a full disk (``data/mcap_io.py``): the open chunk is
written and fsync'ed every ``flush_period_s``, so a recorder killed mid-episode leaves a
``.part`` holding every message older than that period plus one 1 Hz timer tick. On start,
each leftover ``.part`` is rewritten into ``recovered/`` (metadata ``recovered: true``) or moved
to ``corrupt/``, and reported in the log and on /diagnostics (WARN until the next episode
starts). A write that fails (disk full) stops the episode at once: ERROR on /diagnostics
until a stop / discard / start answers it, and the next service response says what reached
the disk; the node keeps running and the other nodes (teleop) never wait on it.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import QoSProfile
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from l1flow_ros.config import param
from l1flow_ros.data.mcap_io import EpisodeError, EpisodeWriter, free_path, normalise_type, recover_leftovers
from l1flow_ros.nodes.composition import spin_node
from l1flow_ros.nodes.diagnostics import ERROR, ERROR_HOLD_S, OK, WARN, Diagnostics
from l1flow_ros.nodes.params import declare
from l1flow_ros.nodes.qos import LATCHED, RECORD, RECORD_SENSOR

NODE_NAME = "recorder_node"


@dataclass(frozen=True)
class RecorderConfig:
    """recorder_node's parameters, all fixed at start."""

    output_dir: str = param("episodes", "folder of episode files (created)")
    cameras: tuple[str, ...] = param(("corner",), "cameras to record")
    joint_states_topic: str = param("/joint_states", "proprioception topic")
    action_topic: str = param("/forward_position_controller/commands", "commanded actions")
    action_type: str = param("std_msgs/msg/Float64MultiArray", "type of action_topic")
    extra_topics: tuple[str, ...] = param((), "more topics to record, each '/topic:pkg/msg/Type'")
    success_topic: str = param("/sim/success", "std_msgs/Bool task success ('' = none)")
    task: str = param("", "task name stored in each episode's metadata")
    max_episode_s: float = param(0.0, "stop an episode automatically after this long; 0 = never")
    calibration_file: str = param("", "camera extrinsics YAML copied into each episode's metadata ('' = none)")
    flush_period_s: float = param(1.0, "write the open chunk to disk (fsync) this often: a killed recorder keeps "
                                       "every message older than this plus 1 s (0 = only when an episode closes)")

    def validate(self) -> None:
        if self.max_episode_s < 0:
            raise EpisodeError(f"max_episode_s must be >= 0, got {self.max_episode_s}")
        if self.flush_period_s < 0:
            raise EpisodeError(f"flush_period_s must be >= 0, got {self.flush_period_s}")
        normalise_type(self.action_type)
        self.extras()

    def extras(self) -> tuple[tuple[str, str], ...]:
        """(topic, type) of each of ``extra_topics``."""
        out = []
        for item in self.extra_topics:
            if not item:
                continue
            topic, sep, type_name = item.rpartition(":")
            if not sep or not topic.startswith("/"):
                raise EpisodeError(f"extra topic {item!r} is not '/topic:pkg/msg/Type'")
            out.append((topic, normalise_type(type_name)))
        return tuple(out)

    def topics(self) -> list[tuple[str, str, QoSProfile]]:
        """(topic, type, QoS) of everything recorded."""
        out = []
        for cam in self.cameras:
            out.append((f"/{cam}/color/image_raw", "sensor_msgs/msg/Image", RECORD_SENSOR))
            out.append((f"/{cam}/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image", RECORD_SENSOR))
            out.append((f"/{cam}/color/camera_info", "sensor_msgs/msg/CameraInfo", RECORD_SENSOR))
        out.append((self.joint_states_topic, "sensor_msgs/msg/JointState", RECORD))
        out.append((self.action_topic, normalise_type(self.action_type), RECORD))
        out.extend((t, ty, RECORD) for t, ty in self.extras())
        return out


def _msg_class(type_name: str):
    pkg, sub, name = normalise_type(type_name).split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError):
        raise EpisodeError(f"message type {type_name} is not installed") from None


class RecorderNode(Node):
    """Episode recorder with start / stop / discard services."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.cfg: RecorderConfig = declare(self, RecorderConfig)  # raises ParameterError
        self.out_dir = Path(self.cfg.output_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

        self._lock = threading.Lock()  # guards the writer (callbacks vs services)
        self._writer: EpisodeWriter | None = None
        self._episode_start = 0.0
        # Task success of the open episode: None = unknown (no success topic heard, e.g. a
        # real arm), else whether the task was solved at any time while recording.
        self._success: bool | None = None
        self._success_latest: bool | None = None  # last value heard, recording or not
        self._n_saved = len(list(self.out_dir.glob("*.mcap")))
        self._n_discarded = 0
        self._last_error = ""
        self._last_error_time = -1e9
        self._last_file = ""
        self._stopped_by = ""  # why a write error stopped the open episode, until a service answers it
        self._recover_due = False  # a stopped episode's .part waits for the disk to have room
        self._leftovers: list = []  # cut-off recordings found, reported until an episode starts
        self._n_leftovers = {"recovered": 0, "unrecovered": 0}
        self._recover()
        for topic, type_name, qos in self.cfg.topics():
            cls = _msg_class(type_name)
            self.create_subscription(
                cls, topic, lambda data, t=topic, ty=type_name: self._on_raw(t, ty, data), qos, raw=True
            )
        if self.cfg.success_topic:
            self.create_subscription(Bool, self.cfg.success_topic, self._on_success, LATCHED)
        self._diag = Diagnostics(self, NODE_NAME, hardware_id="recorder")
        self.create_service(Trigger, "/recorder/start", self._on_start)
        self.create_service(Trigger, "/recorder/stop", self._on_stop)
        self.create_service(Trigger, "/recorder/discard", self._on_discard)
        self.create_timer(1.0, self._on_timer)
        self.get_logger().info(f"recording {len(self.cfg.topics())} topics into {self.out_dir}")

    # ------------------------------------------------------------------ recording
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _recover(self) -> None:
        """Leftover .part files of a recorder that died: into recovered/ or corrupt/, reported."""
        self._leftovers = recover_leftovers(self.out_dir)
        for x in self._leftovers:
            self._n_leftovers["recovered" if x.outcome == "recovered" else "unrecovered"] += 1
            if x.outcome == "recovered":  # one severity per call site (rclpy's rule)
                self.get_logger().warning(f"cut-off recording found: {x}")
            else:
                self.get_logger().error(f"cut-off recording found: {x}")

    def _on_raw(self, topic: str, type_name: str, data: bytes) -> None:
        with self._lock:
            if self._writer is None:
                return
            try:
                self._writer.write_raw(topic, type_name, data, self._now_ns())
            except OSError as e:  # disk full, ...: stop the episode, keep what reached the disk
                self._stop_on_error(f"writing {topic}: {e}")
            except EpisodeError as e:  # this message only (a topic's type changed)
                self._error(f"writing {topic}: {e}")

    def _stop_on_error(self, why: str) -> None:
        """(lock held) The disk refused a write: end the episode now, the .part as it is on disk."""
        w, self._writer = self._writer, None
        w.abort()
        self._stopped_by = (f"episode {w.path.name} stopped by a write error: {why}; at least {w.on_disk} of its {w.count}"
                            f" messages reached the disk in {w.part_path}, recovered into recovered/ by the next"
                            " recorder start")
        self._recover_due = True
        self._error(self._stopped_by)

    def _answer_stopped(self, response: Trigger.Response) -> Trigger.Response:
        """(lock held) A stop / discard / start after a write error: the response says what happened."""
        response.success, response.message, self._stopped_by = False, self._stopped_by, ""
        return response

    def _on_success(self, msg: Bool) -> None:
        with self._lock:
            self._success_latest = bool(msg.data)
            if self._writer is not None:
                self._success = bool(self._success) or bool(msg.data)

    def _error(self, why: str) -> None:
        self._last_error = why
        self._last_error_time = time.monotonic()
        self.get_logger().error(why, throttle_duration_sec=1.0)

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self._writer is not None:
                response.success, response.message = False, f"already recording {self._writer.path}"
                return response
            if self._recover_due:  # the stopped episode's .part, if the disk has room again
                self._recover()
                self._recover_due = any(x.outcome == "left" for x in self._leftovers)
            if self._stopped_by:
                return self._answer_stopped(response)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            path = free_path(self.out_dir / f"episode_{self._n_saved:05d}_{stamp}.mcap")  # never a leftover's name
            meta = dict(task=self.cfg.task, start_ns=self._now_ns(), action_topic=self.cfg.action_topic,
                        joint_states_topic=self.cfg.joint_states_topic, cameras=list(self.cfg.cameras))
            calib = self._read_calibration()
            if calib:
                meta["calibration"] = calib
            try:
                self._writer = EpisodeWriter(path, flush_period_s=self.cfg.flush_period_s, metadata=meta)
            except (OSError, EpisodeError) as e:
                self._error(f"cannot open episode {path.name}: {e}")
                response.success, response.message = False, f"cannot open episode {path.name}: {e}"
                return response
            self._episode_start = time.monotonic()
            self._success = self._success_latest
            self._leftovers = []
        response.success, response.message = True, str(path)
        self.get_logger().info(f"episode started: {path}")
        return response

    def _read_calibration(self) -> dict:
        """The calibration file's content (read at each start: the sim may write it late)."""
        if not self.cfg.calibration_file:
            return {}
        import yaml

        try:
            data = yaml.safe_load(Path(self.cfg.calibration_file).read_text())
        except (OSError, yaml.YAMLError) as e:
            self._error(f"calibration_file {self.cfg.calibration_file}: {e}")
            return {}
        return data if isinstance(data, dict) else {}

    def _finish(self) -> str:
        """Close the open episode (lock held); -> its path."""
        w = self._writer
        self._writer = None
        path = w.close(success=self._success, end_ns=self._now_ns(), messages=w.count)
        self._n_saved += 1
        self._last_file = str(path)
        return str(path)

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self._writer is None:
                if self._stopped_by:
                    return self._answer_stopped(response)
                response.success, response.message = False, "not recording"
                return response
            try:
                response.message = self._finish()
                response.success = True
            except Exception as e:  # EpisodeError from a full disk: the .part stays for recovery
                self._error(f"cannot finish episode: {e}")
                response.success, response.message = False, str(e)
                return response
        self.get_logger().info(f"episode saved: {response.message} (success {self._success})")
        return response

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self._writer is None:
                if self._stopped_by:
                    return self._answer_stopped(response)
                response.success, response.message = False, "not recording"
                return response
            path = self._writer.path
            self._writer.discard()
            self._writer = None
            self._n_discarded += 1
        response.success, response.message = True, f"discarded {path}"
        self.get_logger().info(response.message)
        return response

    def _on_timer(self) -> None:
        with self._lock:
            w = self._writer
            try:
                if w is not None and self.cfg.max_episode_s > 0 and (
                        time.monotonic() - self._episode_start > self.cfg.max_episode_s):
                    self.get_logger().info(f"episode reached max_episode_s: saved {self._finish()}")
                    w = None
                elif w is not None:
                    w.maybe_flush()  # messages stopped coming: what came is on disk within a tick
            except (OSError, EpisodeError) as e:
                if self._writer is w and w is not None:
                    self._stop_on_error(f"flushing: {e}")
                else:
                    self._error(f"cannot finish episode: {e}")
                w = None
            recording, count, on_disk = w is not None, (w.count if w else 0), (w.on_disk if w else 0)
            current, stopped_by, leftovers = str(w.path) if w else "", self._stopped_by, list(self._leftovers)
        if stopped_by:
            level, message = ERROR, stopped_by
        elif time.monotonic() - self._last_error_time < ERROR_HOLD_S:
            level, message = ERROR, self._last_error
        elif leftovers:
            level, message = WARN, f"{len(leftovers)} cut-off recordings found at start: " + "; ".join(map(str, leftovers))
        else:
            level, message = OK, "recording" if recording else "idle"
        vals = {"recording": recording, "file": current, "messages": count, "messages_on_disk": on_disk,
                "episodes_saved": self._n_saved, "episodes_discarded": self._n_discarded, "last_file": self._last_file,
                **{f"leftovers_{k}": n for k, n in self._n_leftovers.items()}}
        self._diag.publish(level, message, vals)

    def close(self) -> None:
        """Finish an open episode on shutdown so no recording is lost."""
        with self._lock:
            if self._writer is not None:
                try:
                    self._finish()
                except Exception as e:
                    self.get_logger().error(f"cannot finish episode on shutdown: {e}")

    def destroy_node(self) -> None:
        if hasattr(self, "_lock"):
            self.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    spin_node(RecorderNode, args)


if __name__ == "__main__":
    main()
