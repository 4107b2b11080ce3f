"""Messages lost in recording: the graph's recorder_node records one episode over the whole
suite (the camera, /joint_states and the action chunks, while the faults are played), and
the file is compared with what was published.

The span the file covers is its first log time (the recorder's receive time) to its last
less ``END_MARGIN_S`` (messages still on their way when the episode closed). Every message
published in that span (by its publish time, never by its stamp: the clock-jump cases shift
the stamps) must be in the file: stamped topics (colour, depth, CameraInfo, /joint_states,
chunks) matched by header stamp; unstamped ones (commands) by value, as a multiset.
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


def check_recording(path: str, stamped: dict[str, list[tuple[int, int]]],
                    valued: dict[str, list[tuple[int, list[float]]]] | None = None) -> RecordingResult:
    """Compare the episode file ``path`` with what was published: ``stamped`` maps a topic to
    (publish ns, header stamp ns) of each message published on it; ``valued`` maps an
    unstamped Float64MultiArray topic to (publish ns, values) of each."""
    from l1flow_ros.data.mcap_io import EpisodeError, read_messages

    valued = valued or {}
    res = RecordingResult(path=path)
    got_stamps: dict[str, Counter] = {t: Counter() for t in stamped}
    got_values: dict[str, Counter] = {t: Counter() for t in valued}
    in_file: Counter = Counter()
    lo, hi = None, None
    try:
        for m in read_messages(path, [*stamped, *valued]):
            lo = m.log_time_ns if lo is None else min(lo, m.log_time_ns)
            hi = m.log_time_ns if hi is None else max(hi, m.log_time_ns)
            in_file[m.topic] += 1
            if m.topic in valued:
                got_values[m.topic][tuple(float(x) for x in m.msg.data)] += 1
            else:
                got_stamps[m.topic][_stamp(m.msg)] += 1
    except EpisodeError as e:
        res.error = str(e)
        return res
    if lo is None:
        res.error = f"{path} holds no message"
        return res
    hi -= int(END_MARGIN_S * 1e9)
    sent = {t: [(pub, key) for pub, key in xs] for t, xs in stamped.items()}
    sent |= {t: [(pub, tuple(float(x) for x in v)) for pub, v in xs] for t, xs in valued.items()}
    got = got_stamps | got_values
    for topic, msgs in sent.items():
        left = Counter(got[topic])
        span = [(pub, key) for pub, key in msgs if lo <= pub <= hi]
        lost = 0
        for pub, key in span:
            if left[key] > 0:
                left[key] -= 1
            else:
                lost += 1
                res.lost_at.append(int(pub))
        res.topics.append(TopicCount(topic, len(span), len(span) - lost, in_file[topic]))
    return res
