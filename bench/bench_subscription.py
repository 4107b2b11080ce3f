"""CPU a subscription costs its process: rclpy's executor vs StreamReader, side by side.

    python bench/bench_subscription.py                 # 500 Hz, 3 rounds x 6 s
    python bench/bench_subscription.py --rate 80 --rounds 2

A publisher process sends ``Float64MultiArray`` (4 values, reliable depth 10: the executor
node's forward-position commands) at ``--rate``; a subscriber process receives it either
through rclpy's SingleThreadedExecutor (a node with that one subscription and a 10 Hz timer,
as a node has) or through :class:`l1flow_ros.nodes.stream_reader.StreamReader` (the same node
spun the same way, the subscription read by the reader). Each subscriber measures its own
process's CPU time (``getrusage``) over ``--seconds`` after a 2 s warm-up; the two modes
alternate round by round. Reported: messages per second received, % of one core, CPU µs per
message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from l1flow_ros.graph.launcher import private_domain_id  # no rclpy: the domain is set before it loads

os.environ.setdefault("ROS_DOMAIN_ID", str(private_domain_id(os.getpid())))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

TOPIC = "/bench_subscription/commands"


def _publisher(rate: float, seconds: float) -> None:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray

    rclpy.init()
    node = Node("bench_subscription_pub")
    pub = node.create_publisher(Float64MultiArray, TOPIC, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    t = time.monotonic()
    end = t + seconds
    while t < end:
        pub.publish(Float64MultiArray(data=[0.1, 0.2, 0.3, 0.4]))
        t += 1.0 / rate
        time.sleep(max(0.0, t - time.monotonic()))
    node.destroy_node()
    rclpy.shutdown()


def _subscriber(mode: str, seconds: float) -> None:
    import resource
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray

    from l1flow_ros.nodes.stream_reader import StreamReader

    rclpy.init()
    node = Node("bench_subscription_sub")
    count = [0]

    def on_msg(msg) -> None:
        count[0] += 1

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    reader = None
    if mode == "executor":
        node.create_subscription(Float64MultiArray, TOPIC, on_msg, qos)
    else:
        reader = StreamReader(node, "bench_reader")
        reader.subscribe(Float64MultiArray, TOPIC, on_msg, qos)
        reader.start()
    node.create_timer(0.1, lambda: None)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    time.sleep(2.0)
    c0, r0, t0 = count[0], resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    time.sleep(seconds)
    c1, r1, t1 = count[0], resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / (t1 - t0)
    rate = (c1 - c0) / (t1 - t0)
    print(json.dumps({"mode": mode, "msgs_per_s": rate, "cpu_share": cpu, "us_per_msg": 1e6 * cpu / max(rate, 1e-9)}),
          flush=True)
    if reader is not None:
        reader.stop()
    os._exit(0)  # skip teardown: the figures are out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--role", choices=("pub", "executor", "reader"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "pub":
        _publisher(args.rate, args.seconds)
        return 0
    if args.role:
        _subscriber(args.role, args.seconds)
        return 0
    rows: dict[str, list[dict]] = {"executor": [], "reader": []}
    for r in range(args.rounds):
        for mode in ("executor", "reader"):
            me = [sys.executable, __file__, "--rate", str(args.rate)]
            pub = subprocess.Popen(me + ["--role", "pub", "--seconds", str(args.seconds + 6.0)])
            out = subprocess.run(me + ["--role", mode, "--seconds", str(args.seconds)],
                                 capture_output=True, text=True, timeout=args.seconds + 60)
            pub.kill()
            pub.wait()
            line = [x for x in out.stdout.splitlines() if x.startswith("{")]
            if not line:
                print(out.stdout, out.stderr, file=sys.stderr)
                return 1
            rows[mode].append(json.loads(line[-1]))
            print(f"round {r + 1} {mode}: {rows[mode][-1]}", file=sys.stderr)
    print(f"\n{args.rate:.0f} Hz Float64MultiArray, {args.rounds} rounds x {args.seconds:.0f} s (range over rounds)\n")
    print("| read by | received (msg/s) | CPU (% of a core) | CPU per message (µs) |")
    print("|---|---|---|---|")
    for mode, label in (("executor", "SingleThreadedExecutor"), ("reader", "StreamReader")):
        rs = rows[mode]

        def rng(key, scale=1.0, fmt="{:.0f}", rs=rs):
            v = [x[key] * scale for x in rs]
            return f"{fmt.format(min(v))}–{fmt.format(max(v))}"

        print(f"| {label} | {rng('msgs_per_s')} | {rng('cpu_share', 100, '{:.1f}')} | {rng('us_per_msg')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
