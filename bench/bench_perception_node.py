"""perception_node at camera rate: RGB-D sets from a publisher process, the node in its own process.

    python bench/bench_perception_node.py                           # 2 x 640x480 RGB-D at 30 Hz, 60 s
    python bench/bench_perception_node.py --seconds 10 --views 4 --json out.json

Three processes, as a deployment has them: a camera publisher (realsense2_camera's topics:
``/<cam>/color/image_raw`` rgb8, ``/<cam>/aligned_depth_to_color/image_raw`` 16UC1,
``/<cam>/color/camera_info``, plus ``/joint_states``, every stream of a set stamped alike,
published on absolute deadlines at ``--rate``), ``perception_node`` started by the launcher
(graph/launcher.py, one process, ``OMP_NUM_THREADS=--threads``) with a bundle of the default
encoder for these cameras, and this process's probe, which takes every embedding and the
node's /diagnostics.

After ``--warmup`` s (the first sets build the cameras' pixel grids and warm the encoder), over
the rest of the run: sets sent, embeddings of them received, sets missing (the node's own
``sets_dropped``: complete sets it replaced by a newer one before encoding; the rest never
completed in its synchroniser), observation stamp -> embedding at the probe (p50 / p99 / max),
the node's stage times from its /diagnostics, and the CPU the node's process used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
JOINTS = ("ee_x", "ee_y", "ee_z", "gripper")
WORKSPACE = (-0.6, 0.6, -0.6, 0.6, -0.02, 0.6)


def _publisher(cfg: dict, ready, stop, out) -> None:
    """The camera process: pre-built messages, re-stamped and published on absolute deadlines."""
    import rclpy
    from bench_perception import scene
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from l1flow_ros.msgs.sensor_conv import camera_info_to_msg, image_to_msg, joint_state_to_msg
    from l1flow_ros.msgs.stamps import split_ns
    from l1flow_ros.nodes.qos import RELIABLE_10, SENSOR

    cams, intr, _, frames, _ = scene(cfg["views"], cfg["width"], cfg["height"], n_frames=cfg["frames"])
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_camera_publisher", context=ctx, enable_rosout=False,
                             start_parameter_services=False)
    pubs, sets = [], []
    for c in cams:
        pubs += [node.create_publisher(CameraInfo, f"/{c}/color/camera_info", SENSOR),
                 node.create_publisher(Image, f"/{c}/color/image_raw", SENSOR),
                 node.create_publisher(Image, f"/{c}/aligned_depth_to_color/image_raw", SENSOR)]
    pubs.append(node.create_publisher(JointState, "/joint_states", RELIABLE_10))
    rng = np.random.default_rng(0)
    for fr in frames:
        msgs = []
        for c in cams:
            rgb, depth = fr[c]
            msgs += [camera_info_to_msg(intr, 0, f"{c}_color_optical_frame"),
                     image_to_msg(rgb, "rgb8", 0, f"{c}_color_optical_frame"),
                     image_to_msg(depth, "16UC1", 0, f"{c}_color_optical_frame")]
        msgs.append(joint_state_to_msg(JOINTS, rng.normal(size=len(JOINTS)), 0))
        sets.append(msgs)
    end = time.monotonic() + 120.0
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < end and not stop.is_set():
        time.sleep(0.05)
    for p, m in zip(pubs[0::3], sets[0][0::3]):  # the intrinsics before the first set
        p.publish(m)
    time.sleep(0.5)
    ready.set()
    period = 1.0 / cfg["rate"]
    n = int(round(cfg["seconds"] * cfg["rate"]))
    sent, late, pub_s = [], 0, []
    t0 = time.monotonic() + 0.2
    for k in range(n):
        if stop.is_set():
            break
        due = t0 + k * period
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif -wait > period:
            late += 1  # more than a whole period behind its deadline
        stamp = node.get_clock().now().nanoseconds
        sec, nsec = split_ns(stamp)
        a = time.perf_counter()
        for p, m in zip(pubs, sets[k % len(sets)]):
            m.header.stamp.sec, m.header.stamp.nanosec = sec, nsec
            p.publish(m)
        pub_s.append(time.perf_counter() - a)
        sent.append(stamp)
    out.put({"sent": sent, "late": late, "publish_ms_p50": 1e3 * float(np.median(pub_s)) if pub_s else 0.0,
             "span_s": (time.monotonic() - t0)})
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def _make_assets(d: Path, args) -> Path:
    """A bundle with the default encoder for these cameras, the calibration, the parameter file."""
    import torch
    import yaml
    from bench_perception import scene

    from l1flow_ros.policy.bundle import make_manifest, save_bundle
    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.normalizer import Normalizer
    from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

    cams, _, calib, _, _ = scene(args.views, 16, 12, n_frames=1)  # only the camera poses
    obs = ObservationSpec(cameras=cams, image_size=(96, 96), num_points=args.num_points, workspace=WORKSPACE,
                          voxel_size=0.005, proprio_names=JOINTS, n_obs_steps=2)
    torch.manual_seed(0)
    model = PolicyModel(obs, ActionSpec(names=JOINTS, horizon=16, n_action_steps=8, dt=0.1), SamplerSpec(),
                        ModelConfig())
    save_bundle(d / "bundle", model, make_manifest(model, Normalizer(-np.ones(4), np.ones(4), np.zeros(4),
                                                                     np.ones(4))))
    if args.backend != "torch":
        from l1flow_ros.inference.export import export_bundle

        export_bundle(d / "bundle")  # encoder.onnx
    (d / "calib.yaml").write_text(yaml.safe_dump({"cameras": {c: {"matrix": T.tolist()} for c, T in calib.items()}}))
    params = {"perception_node": {"ros__parameters": {
        "cameras": list(cams), "checkpoint": str(d / "bundle"), "calibration_file": str(d / "calib.yaml"),
        "slop": 0.005, "max_observation_age": args.max_observation_age, "diagnostics_period": 1.0,
        "encoder_backend": args.backend}}}
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    return d / "params.yaml"


class _Probe:
    """Embeddings (stamp, arrival) and perception_node's /diagnostics (arrival, values)."""

    def __init__(self, context) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        from l1flow_ros.nodes.qos import RELIABLE_1, RELIABLE_10

        self.node = rclpy.create_node("bench_perception_probe", context=context, enable_rosout=False,
                                      start_parameter_services=False)
        self.lock = threading.Lock()
        self.embs: list[tuple[int, int]] = []
        self.diags: list[tuple[int, dict[str, str]]] = []
        self.node.create_subscription(Image, "/l1flow/embedding", self._on_emb, RELIABLE_1)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE_10)

    def _on_emb(self, msg) -> None:
        from l1flow_ros.msgs.stamps import stamp_to_ns

        now = self.node.get_clock().now().nanoseconds
        with self.lock:
            self.embs.append((stamp_to_ns(msg.header.stamp), now))

    def _on_diag(self, msg) -> None:
        now = self.node.get_clock().now().nanoseconds
        for st in msg.status:
            if "perception_node" in st.name:
                with self.lock:
                    self.diags.append((now, {kv.key: kv.value for kv in st.values}))

    def diag_at(self, t_ns: int | None = None) -> dict[str, str]:
        """The node's newest diagnostics (arrived no later than ``t_ns``)."""
        with self.lock:
            ds = [v for t, v in self.diags if t_ns is None or t <= t_ns]
        return ds[-1] if ds else {}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _int(d: dict[str, str], k: str) -> int:
    try:
        return int(d.get(k, "0"))
    except ValueError:
        return 0


def _free_domain() -> str:
    """A ROS domain with no node on it (the environment's first): another graph on the same
    machine in the same domain would mix its topics and diagnostics with this one's."""
    import rclpy

    from l1flow_ros.graph.launcher import PRIVATE_DOMAINS
    from l1flow_ros.nodes.composition import Composition

    first = os.environ.get("ROS_DOMAIN_ID", "")
    rng = np.random.default_rng(os.getpid())
    for d in [first] * bool(first) + [str(x) for x in rng.permutation(np.array(PRIVATE_DOMAINS))[:8]]:
        os.environ["ROS_DOMAIN_ID"] = d
        with Composition() as rig:
            node = rclpy.create_node("bench_domain_check", context=rig.context, enable_rosout=False,
                                     start_parameter_services=False)
            rig.add(node)
            time.sleep(2.0)  # discovery
            others = [n for n, _ in node.get_node_names_and_namespaces() if n != "bench_domain_check"]
        if not others:
            return d
    raise RuntimeError("no free ROS domain found (every one tried has nodes on it)")


def run(args) -> dict:
    from l1flow_ros.graph.launcher import ProcessGraph, network_env
    from l1flow_ros.nodes.composition import Composition

    network_env()
    # Before this process makes its first participant (the domain check): Fast DDS reads the
    # profile once per process, and a probe without it beside a node with it got no
    # /diagnostics in 180 s in two runs of three (discovered, QoS matched). The publisher
    # (spawned below) and the node inherit it.
    if args.dds_profile:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(Path(args.dds_profile).resolve())
    os.environ["ROS_DOMAIN_ID"] = _free_domain()
    with tempfile.TemporaryDirectory() as tmp:
        params = _make_assets(Path(tmp), args)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        ctx = mp.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        cfg = {k: getattr(args, k) for k in ("views", "width", "height", "rate", "seconds", "frames")}
        pub = None
        with Composition() as rig:
            probe = _Probe(rig.context)
            rig.add(probe.node)
            graph = ProcessGraph(params, names=["perception_node"], env=env, log_file=Path(tmp) / "graph.log")
            try:
                graph.start()
                pid = graph.procs["perception_node"].popen.pid
                graph.wait_discovered(timeout=120)
                end = time.monotonic() + 180
                while not probe.diag_at().get("fingerprint") and time.monotonic() < end:
                    graph.check()
                    time.sleep(0.2)
                if not probe.diag_at().get("fingerprint"):
                    raise RuntimeError("perception_node did not load its encoder in 180 s:\n"
                                       + graph.tail("perception_node"))
                pub = ctx.Process(target=_publisher, args=(cfg, ready, stop, out), daemon=True)
                pub.start()
                if not ready.wait(180):
                    raise RuntimeError("the publisher found no subscriber in 180 s")
                t_start = probe.node.get_clock().now().nanoseconds
                time.sleep(args.warmup)
                t_win = probe.node.get_clock().now().nanoseconds
                cpu0, w0 = _cpu_s(pid), time.monotonic()
                res = out.get(timeout=args.seconds + 120)
                cpu1, w1 = _cpu_s(pid), time.monotonic()
                time.sleep(2.5)  # the last embeddings and one more diagnostics period
                graph.check()
            finally:
                stop.set()
                if pub is not None:
                    pub.join(10)
                graph.stop()
            sent = np.asarray(res["sent"], dtype=np.int64)
            win = sent[sent >= t_win]
            with probe.lock:
                embs = list(probe.embs)
            got = {s: a for s, a in embs}
            recv = [s for s in win.tolist() if s in got]
            lat = np.array([(got[s] - s) * 1e-6 for s in recv]) if recv else np.zeros(1)
            d0, d1 = probe.diag_at(t_win), probe.diag_at()
            stamps = [s for s, _ in embs]
            out_d = {
                "views": args.views, "camera": f"{args.width}x{args.height}", "rate_hz": args.rate,
                "points": args.num_points, "seconds": args.seconds, "warmup_s": args.warmup,
                "sets_sent": int(win.size), "embeddings_received": len(recv),
                "sets_missing": int(win.size - len(recv)),
                "node_sets_dropped": _int(d1, "sets_dropped") - _int(d0, "sets_dropped"),
                "node_embeddings_published": _int(d1, "embeddings_published") - _int(d0, "embeddings_published"),
                "foreign_embeddings": len(set(stamps) - set(sent.tolist())),
                "stamps_increasing": bool(all(b > a for a, b in zip(stamps, stamps[1:]))),
                "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p99": float(np.percentile(lat, 99)),
                "latency_ms_max": float(lat.max()),
                "node_cpu_percent": 100.0 * (cpu1 - cpu0) / max(w1 - w0, 1e-9),
                "publisher_late": int(res["late"]), "publish_ms_p50": res["publish_ms_p50"],
                "publisher_rate_hz": len(res["sent"]) / max(res["span_s"], 1e-9),
                "node_stages_ms": {k: d1.get(k, "") for k in sorted(d1) if k.endswith(("_ms_p50", "_ms_p99"))},
                "load_average_1min": os.getloadavg()[0], "first_set_to_window_s": (t_win - t_start) * 1e-9,
                # The whole run, warm-up included: every set sent is published or counted as dropped
                # unless it never completed (lost in transport) or was refused (too old, bad data).
                "total_sent": int(sent.size), "total_received": len(embs),
                "node_published_total": _int(d1, "embeddings_published"),
                "node_dropped_total": _int(d1, "sets_dropped"),
                "node_diagnostics": d1,
            }
    return out_d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--rate", type=float, default=30.0, help="sets per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="publishing time, warm-up included")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds left out at the start")
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=4, help="distinct scenes the publisher cycles through")
    ap.add_argument("--max-observation-age", type=float, default=0.5, help="the node's parameter, s")
    ap.add_argument("--threads", type=int, default=1, help="the node's OMP_NUM_THREADS (torch intra-op threads)")
    ap.add_argument("--backend", default="torch", help="the node's encoder_backend (torch, onnxruntime)")
    ap.add_argument("--dds-profile", default=str(ROOT / "config" / "fastdds_large_data.xml"),
                    help="Fast DDS profile for every process ('' : Fast DDS defaults, which lose most "
                         "640x480 images: see the file)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    r = run(args)
    print(f"perception_node at {args.rate:g} Hz, {args.views} x {args.width}x{args.height} RGB-D, "
          f"{args.num_points} points, encoder on {args.backend}, {args.seconds - args.warmup:g} s measured after "
          f"{args.warmup:g} s warm-up, "
          f"Fast DDS profile {Path(args.dds_profile).name if args.dds_profile else 'none'}; "
          f"load average (1 min) {r['load_average_1min']:.1f} on {os.cpu_count()} CPUs")
    print(f"  sets sent {r['sets_sent']}, embeddings received {r['embeddings_received']}, missing "
          f"{r['sets_missing']} (the node dropped {r['node_sets_dropped']}; it published "
          f"{r['node_embeddings_published']})")
    print(f"  observation -> embedding at the probe: p50 {r['latency_ms_p50']:.1f} ms, p99 "
          f"{r['latency_ms_p99']:.1f} ms, max {r['latency_ms_max']:.1f} ms (a frame period is "
          f"{1e3 / args.rate:.1f} ms)")
    st = r["node_stages_ms"]
    print("  the node's stages, p50 / p99 ms (its last 300 embeddings): " + ", ".join(
        f"{s} {st.get(s + '_ms_p50', '?')} / {st.get(s + '_ms_p99', '?')}"
        for s in ("decode", "fuse", "encode", "total", "latency")))
    print(f"  the node's process: {r['node_cpu_percent']:.0f} % of a core; publisher {r['publisher_rate_hz']:.2f} Hz, "
          f"{r['publisher_late']} deadlines missed by over a period, publish {r['publish_ms_p50']:.2f} ms a set")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
