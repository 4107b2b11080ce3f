"""Messages lost in recording: the graph's recorder_node records one episode over the whole
suite (the camera, /joint_states and the commands, while the faults are played), and the
file is compared with what was published.

Stamped topics (colour, depth, CameraInfo, /joint_states) by stamp: every stamp published
between the first and the last stamp in the file (the episode's span as the recorder saw it)
must be in the file. The commands carry no stamp: by value, as a multiset, every command
the guard received with a source time inside the file's span (from the first recorded
command to the last one less ``END_MARGIN_S``, for those still on their way when the
episode closed) must be in the file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

END_MARGIN_S = 0.1


@dataclass
class TopicCount:
    topic: str
    published: int  # in the span the file covers
    recorded: int  # of those, in the file
    in_file: int  # every message of the topic in the file

    @property
    def lost(self) -> int:
        return self.published - self.recorded


@dataclass
class RecordingResult:
    path: str = ""
    topics: list[TopicCount] = field(default_factory=list)
    error: str = ""  # why the recording could not be checked
    lost_at: list[int] = field(default_factory=list)  # when each lost message was published (stamp / source ns)

    @property
    def published(self) -> int:
        return sum(t.published for t in self.topics)

    @property
    def lost(self) -> int:
        return sum(t.lost for t in self.topics)

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.topics) and self.lost == 0

    def summary(self) -> str:
        if self.error:
            return f"not checked: {self.error}"
        per = ", ".join(f"{t.topic} {t.lost}/{t.published}" for t in self.topics)
        return f"{self.lost} of {self.published} ({per})"


def _stamp(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def check_recording(path: str, stamped: dict[str, list[int]], commands_topic: str,
                    commands: tuple[list[int], list[list[float]]]) -> RecordingResult:
    """Compare the episode file ``path`` with what was published: ``stamped`` maps each
    stamped topic to the stamps published on it; ``commands`` = (source times ns, values)
    of the commands the guard received on ``commands_topic``."""
    from l1flow_ros.data.mcap_io import EpisodeError, read_messages

    res = RecordingResult(path=path)
    rec: dict[str, list[int]] = {t: [] for t in stamped}
    cmd_log: list[int] = []
    cmd_vals: Counter = Counter()
    try:
        for m in read_messages(path, [*stamped, commands_topic]):
            if m.topic == commands_topic:
                cmd_log.append(m.log_time_ns)
                cmd_vals[tuple(float(x) for x in m.msg.data)] += 1
            else:
                rec[m.topic].append(_stamp(m.msg))
    except EpisodeError as e:
        res.error = str(e)
        return res
    for topic, sent in stamped.items():
        got = set(rec[topic])
        if not got:
            res.topics.append(TopicCount(topic, len(sent), 0, 0))
            continue
        lo, hi = min(got), max(got)
        span = [s for s in sent if lo <= s <= hi]
        res.topics.append(TopicCount(topic, len(span), sum(s in got for s in span), len(rec[topic])))
        res.lost_at += [s for s in span if s not in got]
    t, p = commands
    if cmd_log:
        lo, hi = min(cmd_log), max(cmd_log) - int(END_MARGIN_S * 1e9)
        want = Counter(tuple(float(x) for x in v) for ti, v in zip(t, p) if lo <= ti <= hi)
        missing = sum(max(0, n - cmd_vals.get(v, 0)) for v, n in want.items())
        n = sum(want.values())
        left = Counter(cmd_vals)
        for ti, v in zip(t, p):  # the lost ones' times: values not (or no more often) in the file
            key = tuple(float(x) for x in v)
            if lo <= ti <= hi:
                if left[key] > 0:
                    left[key] -= 1
                else:
                    res.lost_at.append(int(ti))
        res.topics.append(TopicCount(commands_topic, n, n - missing, len(cmd_log)))
    else:
        res.topics.append(TopicCount(commands_topic, len(t), 0, 0))
    return res
