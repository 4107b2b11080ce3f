"""Soak: the simulated graph, one process per node, looping episodes for a given time.

What a few minutes never shows: memory, file descriptors or DDS entities that leak, latency
that creeps. :func:`soak_graph` starts the graph of ``config`` (default ``sim``: sim_robot_node
-> perception_node -> inference_node -> executor_node, as ``l1flow run sim`` does, through
:class:`~l1flow_ros.graph.launcher.ProcessGraph`), watches it with the evaluation's probe and
runs episodes of the bundle back to back (:func:`~l1flow_ros.graph.evaluation.run_episode`:
disable, reset to the next seed, enable, success or the time limit) for ``duration_s``,
after ``warmup_s`` of episodes that are not measured (allocators and caches filling).

Per window of ``window_s`` (closed at the first episode end after it): episodes and
successes; per node process, resident memory (``VmRSS`` of ``/proc/<pid>/status``), open file
descriptors (``/proc/<pid>/fd``) and threads; the DDS entities the probe sees (nodes, and
publishers + subscriptions summed over every topic); obs -> chunk p50 / p99 (the chunk on the
wire minus its observation stamp); the executor's control-period error p99 (its own
statistic over its last 8192 periods, sampled every 8192 periods without overlap and
averaged over the window); its missed control ticks, and beside them a bare loop's to the
same deadlines at the same SCHED_FIFO priority in a process of its own
(:class:`~l1flow_ros.graph.faults.floor.Floor`, without the busy-wait: what the machine
itself did not give a real-time thread).

Pass: in every window, each node's resident memory within +10 % of its first window's, and
obs -> chunk p99 and period error p99 within +20 % of the first window's.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

RSS_LIMIT = 0.10  # resident memory at most this much above the first window's
P99_LIMIT = 0.20  # obs -> chunk p99 and period-error p99 at most this much above the first window's
SAMPLE_PERIODS = 8192  # the executor's timing window (control.loop.TIMING_WINDOW)


def proc_stats(pid: int) -> dict[str, float]:
    """Resident memory (MiB), open file descriptors and threads of process ``pid`` (Linux
    /proc); nan where it cannot be read (the process ended)."""
    out = {"rss_mib": float("nan"), "fds": float("nan"), "threads": float("nan")}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key == "VmRSS":
                    out["rss_mib"] = int(val.split()[0]) / 1024.0
                elif key == "Threads":
                    out["threads"] = float(val.strip())
        out["fds"] = float(len(os.listdir(f"/proc/{pid}/fd")))
    except (OSError, ValueError):
        pass
    return out


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used; nan where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return float("nan")


def cpu_seconds(cpus: set[int] | None = None) -> tuple[float, float, float]:
    """(all, idle, stolen) CPU seconds since boot over ``cpus`` (None: every CPU), from
    /proc/stat's per-CPU lines; nans when unreadable. Idle counts iowait; the steal is the time
    the hypervisor ran something else while these CPUs wanted to run. Two readings give the
    shares in between."""
    total = idle = steal = 0.0
    try:
        hz = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            for line in f:
                name, *vals = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and (cpus is None or int(name[3:]) in cpus):
                    v = [int(x) for x in vals[:8]] + [0] * (8 - len(vals[:8]))
                    total, idle, steal = total + sum(v) / hz, idle + (v[3] + v[4]) / hz, steal + v[7] / hz
    except (OSError, ValueError):
        return float("nan"), float("nan"), float("nan")
    return total, idle, steal


def machine_cpu_s() -> tuple[float, float]:
    """(all CPU seconds, stolen seconds) over every CPU since boot (:func:`cpu_seconds`)."""
    total, _, steal = cpu_seconds()
    return total, steal


@dataclass
class SoakWindow:
    index: int
    start_s: float  # since the measured part began
    end_s: float
    episodes: int = 0
    successes: int = 0
    rss_mib: dict[str, float] = field(default_factory=dict)  # per node, at the window's end
    fds: dict[str, float] = field(default_factory=dict)
    threads: dict[str, float] = field(default_factory=dict)
    dds_nodes: int = 0
    dds_endpoints: int = 0  # publishers + subscriptions over every topic, as the probe sees them
    chunks: int = 0
    chunk_latency_ms_p50: float = float("nan")
    chunk_latency_ms_p99: float = float("nan")
    period_error_us_p99: float = float("nan")  # mean of the executor's non-overlapping window p99s
    missed_ticks: int = 0
    deadlines: int = 0
    floor_missed: int = -1  # the bare loop's over the same window (-1: not measured)
    cpu_pct: dict[str, float] = field(default_factory=dict)  # per node, % of one core over the window
    steal_pct: float = float("nan")  # the machine's CPU time stolen by the hypervisor, % of all CPU time

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s

    @property
    def missed_per_min(self) -> float:
        return 60.0 * self.missed_ticks / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class SoakResult:
    bundle: str
    task: str
    config: str
    duration_s: float
    window_s: float
    warmup_s: float
    windows: list[SoakWindow] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the pass rule's, one line each
    exit_codes: dict[str, int] = field(default_factory=dict)
    floor_scheduling: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.windows) and not self.failures

    def judge(self) -> None:
        """The pass rule against the first window (module docstring)."""
        self.failures = []
        if not self.windows:
            self.failures.append("no window was measured")
            return
        w0 = self.windows[0]
        for w in self.windows[1:]:
            for node, rss in w.rss_mib.items():
                ref = w0.rss_mib.get(node, float("nan"))
                if not rss <= ref * (1 + RSS_LIMIT):
                    self.failures.append(f"window {w.index}: {node} resident memory {rss:.1f} MiB > first window's "
                                         f"{ref:.1f} MiB + {100 * RSS_LIMIT:.0f} %")
            for key, what in (("chunk_latency_ms_p99", "obs -> chunk p99"),
                              ("period_error_us_p99", "control period error p99")):
                x, ref = getattr(w, key), getattr(w0, key)
                if not x <= ref * (1 + P99_LIMIT):
                    self.failures.append(f"window {w.index}: {what} {x:.1f} > first window's {ref:.1f} + "
                                         f"{100 * P99_LIMIT:.0f} %")

    def table(self, command: str = "") -> str:
        nodes = list(self.windows[0].rss_mib) if self.windows else []
        lines = []
        if command:
            lines += [f"Command: `{command}`  "]
        lines += [
            f"Bundle `{Path(self.bundle).name}` on {self.task}, graph `{self.config}` (one process per node); "
            f"{self.duration_s / 60:.0f} min measured after {self.warmup_s:.0f} s of warm-up, windows of "
            f"{self.window_s / 60:.1f} min. Bare loop: {self.floor_scheduling or '-'}.",
            "",
            "| window | min | success | " + " | ".join(f"{n.replace('_node', '')} RSS MiB / fds / threads"
                                                       for n in nodes)
            + " | DDS nodes / endpoints | obs → chunk p50 / p99 ms | period error p99 µs | missed ticks (/ min) "
              "| bare loop missed | CPU % of a core: " + " / ".join(n.replace("_node", "") for n in nodes)
            + " | steal % |",
            "|---|---|---|" + "---|" * len(nodes) + "---|---|---|---|---|---|---|",
        ]
        for w in self.windows:
            per_node = " | ".join(f"{w.rss_mib.get(n, float('nan')):.1f} / {w.fds.get(n, float('nan')):.0f} / "
                                  f"{w.threads.get(n, float('nan')):.0f}" for n in nodes)
            lines.append(
                f"| {w.index} | {w.start_s / 60:.1f}–{w.end_s / 60:.1f} | {w.successes}/{w.episodes} | {per_node} | "
                f"{w.dds_nodes} / {w.dds_endpoints} | {w.chunk_latency_ms_p50:.1f} / {w.chunk_latency_ms_p99:.1f} | "
                f"{w.period_error_us_p99:.0f} | {w.missed_ticks} ({w.missed_per_min:.1f}) | "
                f"{'-' if w.floor_missed < 0 else w.floor_missed} | "
                + " / ".join(f"{w.cpu_pct.get(n, float('nan')):.0f}" for n in nodes) + f" | {w.steal_pct:.1f} |")
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        lines += ["", f"Pass rule (each node's RSS within +{100 * RSS_LIMIT:.0f} % of window 1, obs → chunk p99 "
                      f"and period error p99 within +{100 * P99_LIMIT:.0f} % of window 1): {verdict}"]
        bad = {n: rc for n, rc in self.exit_codes.items() if rc != 0}
        lines.append(f"Nodes stopped: {'exit codes ' + str(bad) if bad else 'exit code 0 each'}.")
        return "\n".join(lines) + "\n"


def _dds_counts(node) -> tuple[int, int]:
    """(nodes, publishers + subscriptions over every topic) in the graph, as ``node`` sees it."""
    topics = node.get_topic_names_and_types()
    endpoints = sum(node.count_publishers(t) + node.count_subscribers(t) for t, _ in topics)
    return len(node.get_node_names()), endpoints


class _TimingSampler:
    """The executor's period-error p99 from /diagnostics every SAMPLE_PERIODS periods (its
    statistics windows, without overlap), on a thread of its own."""

    def __init__(self, probe, period_s: float) -> None:
        self.probe, self.interval = probe, SAMPLE_PERIODS * period_s
        self.samples: list[tuple[float, float]] = []  # (monotonic s, p99 us)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak_timing", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from l1flow_ros.graph.evaluation import _f

        while not self._stop.wait(self.interval):
            with self.probe.lock:
                v = _f(self.probe.diag.get("executor_node", {}), "period_error_us_p99")
            if v == v:
                self.samples.append((time.monotonic(), v))

    def mean_between(self, t0: float, t1: float) -> float:
        xs = [v for t, v in self.samples if t0 < t <= t1]
        if not xs:  # a window shorter than one statistics window: the latest value
            from l1flow_ros.graph.evaluation import _f

            with self.probe.lock:
                return _f(self.probe.diag.get("executor_node", {}), "period_error_us_p99")
        return float(np.mean(xs))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def _executor_counts(probe) -> tuple[int, int]:
    from l1flow_ros.graph.evaluation import _f

    with probe.lock:
        d = dict(probe.diag.get("executor_node", {}))
    m, n = _f(d, "missed_ticks"), _f(d, "deadlines")
    return (0 if m != m else int(m)), (0 if n != n else int(n))


def soak_graph(
    bundle: str | Path,
    duration_s: float,
    window_s: float = 300.0,
    warmup_s: float = 60.0,
    task: str | None = None,
    seed: int = 200000,
    episode_timeout: float = 10.0,
    config: str | Path = "sim",
    log: Callable[[str], None] = print,
    log_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    on_window: Callable[[SoakWindow], None] | None = None,
) -> SoakResult:
    """Episodes of ``bundle`` back to back through the graph of ``config`` for ``duration_s``
    (after ``warmup_s``), measured in round(duration_s / window_s) windows, each closed at the
    first episode end after ``window_s`` (module docstring); ``on_window`` is called with each
    window as it closes."""
    from l1flow_ros.graph import config_path, nodes_in_config, parameter_value
    from l1flow_ros.graph.evaluation import _pct, _Probe, graph_overrides, run_episode, wait_first_chunk
    from l1flow_ros.graph.faults.floor import Floor
    from l1flow_ros.graph.launcher import ProcessGraph
    from l1flow_ros.nodes.composition import Composition
    from l1flow_ros.policy.manifest import read_manifest

    if duration_s <= 0 or window_s <= 0 or warmup_s < 0:
        raise ValueError(f"duration ({duration_s}) and window ({window_s}) must be > 0, warm-up >= 0")
    bundle = str(Path(bundle).resolve())
    manifest = read_manifest(bundle)
    path = config_path(config)
    names = nodes_in_config(path)
    sim_task = task or parameter_value(path, "sim_robot_node", "task")
    # The bare loop at the executor's rate and priority, sleeping all the way: a missed tick is
    # a wake-up a whole period late, which the executor's 200 us spin does not change, and
    # the spin would take a tenth of a core from the simulator (one core: taskset -c 0).
    rate = float(parameter_value(path, "executor_node", "rate_hz", 500.0))
    prio = int(parameter_value(path, "executor_node", "realtime_priority", 0))
    diag_s = float(parameter_value(path, "executor_node", "diagnostics_period", 1.0))
    n_windows = max(1, int(round(duration_s / window_s)))
    res = SoakResult(bundle=bundle, task=str(sim_task), config=str(config), duration_s=duration_s,
                     window_s=window_s, warmup_s=warmup_s)
    ovr = graph_overrides(bundle, manifest, seed, task) + list(overrides)
    with contextlib.ExitStack() as stack:
        rig = stack.enter_context(Composition())
        graph = ProcessGraph(path, names, ovr, log_file=log_file)
        stack.callback(lambda: res.exit_codes.update(graph.stop()))
        graph.start()
        probe = _Probe(camera=next(iter(manifest.observation.cameras), ""), context=rig.context)
        rig.add(probe)
        floor = Floor(rate, prio, 0)
        stack.callback(floor.close)
        wait_first_chunk(probe, graph)
        res.floor_scheduling = floor.scheduling
        log(f"soak: graph up ({', '.join(names)}, one process each); warm-up {warmup_s:.0f} s")
        t_end = time.monotonic() + warmup_s
        ep = 0
        while time.monotonic() < t_end:
            run_episode(probe, graph, episode_timeout)
            ep += 1
        sampler = _TimingSampler(probe, 1.0 / rate)
        stack.callback(sampler.stop)
        t_measure = time.monotonic()
        while len(res.windows) < n_windows:
            w = SoakWindow(index=len(res.windows) + 1, start_s=time.monotonic() - t_measure, end_s=0.0)
            t0 = time.monotonic()
            probe.clear_latencies()
            (m0, n0), f0 = _executor_counts(probe), floor.read()
            cpu0 = {n: proc_cpu_s(graph.procs[n].popen.pid) for n in names}
            mach0 = machine_cpu_s()
            while time.monotonic() - t0 < window_s:
                success, _ = run_episode(probe, graph, episode_timeout)
                w.episodes += 1
                w.successes += int(success)
                ep += 1
            # One more diagnostics period, so that the counts cover the last episode.
            time.sleep(1.1 * diag_s)
            t1 = time.monotonic()
            (m1, n1), f1 = _executor_counts(probe), floor.read()
            w.end_s = t1 - t_measure
            with probe.lock:
                lat = np.asarray(probe.latency_ms, dtype=np.float64)
            w.chunks = int(lat.size)
            w.chunk_latency_ms_p50, w.chunk_latency_ms_p99 = _pct(lat, 50), _pct(lat, 99)
            w.period_error_us_p99 = sampler.mean_between(t0, t1)
            w.missed_ticks, w.deadlines = max(m1 - m0, 0), max(n1 - n0, 0)
            w.floor_missed = f1[0] - f0[0] if floor.alive() else -1
            mach1 = machine_cpu_s()
            w.steal_pct = 100.0 * (mach1[1] - mach0[1]) / max(mach1[0] - mach0[0], 1e-9)
            for name in names:
                w.cpu_pct[name] = 100.0 * (proc_cpu_s(graph.procs[name].popen.pid) - cpu0[name]) / (t1 - t0)
                st = proc_stats(graph.procs[name].popen.pid)
                w.rss_mib[name], w.fds[name], w.threads[name] = st["rss_mib"], st["fds"], st["threads"]
            w.dds_nodes, w.dds_endpoints = _dds_counts(probe)
            res.windows.append(w)
            log(f"soak: window {w.index}: {w.successes}/{w.episodes} success, obs -> chunk p99 "
                f"{w.chunk_latency_ms_p99:.1f} ms, period error p99 {w.period_error_us_p99:.0f} us, missed ticks "
                f"{w.missed_ticks} (bare loop {w.floor_missed}), RSS "
                + ", ".join(f"{n.replace('_node', '')} {w.rss_mib[n]:.0f}" for n in names) + " MiB")
            if on_window is not None:
                on_window(w)
        call_service_disable(probe)
    res.judge()
    return res


def call_service_disable(probe) -> None:
    """Leave the arm disabled at the end (the graph stops next)."""
    from std_srvs.srv import SetBool

    from l1flow_ros.nodes.composition import call_service

    with contextlib.suppress(RuntimeError):
        call_service(probe.enable_cli, SetBool.Request(data=False))


SOAK_BEGIN = "<!-- generated by `l1flow soak --markdown`: from here -->"
SOAK_END = "<!-- generated by `l1flow soak --markdown`: to here -->"


def write_markdown(path: str | Path, body: str, heading: str = "## Soak") -> None:
    """Put ``body`` between the soak markers of ``path`` (the rest of the file stays); a file
    without them gets a ``heading`` section with them, before the fault suite's generated part
    (``l1flow faults`` replaces only what follows its marker), else at the end."""
    from l1flow_ros.graph.faults.report import GEN_MARKER

    path = Path(path)
    text = path.read_text() if path.exists() else ""
    block = f"{SOAK_BEGIN}\n\n{body.rstrip()}\n\n{SOAK_END}"
    if SOAK_BEGIN in text and SOAK_END in text:
        head, rest = text.split(SOAK_BEGIN, 1)
        text = head + block + rest.split(SOAK_END, 1)[1]
    elif GEN_MARKER in text:
        head, rest = text.split(GEN_MARKER, 1)
        text = f"{head.rstrip()}\n\n{heading}\n\n{block}\n\n{GEN_MARKER}{rest}"
    else:
        text = f"{text.rstrip()}\n\n{heading}\n\n{block}\n".lstrip()
    path.write_text(text)


def result_json(res: SoakResult) -> str:
    return json.dumps(asdict(res) | {"passed": res.passed}, indent=1, default=str)
