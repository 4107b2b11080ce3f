"""``l1flow bench inference``: p50 / p99 latency of each sampler on each available backend."""

from __future__ import annotations

import argparse

NAME = "bench"
HELP = "benchmarks: `l1flow bench inference [BUNDLE]` (sampler x backend latency, one run)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = sub.add_parser("inference", help="latency of each sampler on each backend, ratios to FM 10 and DDPM 100")
    q.add_argument("bundle", nargs="?", default="",
                   help="bundle whose architecture to measure (default: an untrained one of the default size)")
    q.add_argument("--samplers", nargs="*", default=None, metavar="KIND[:STEPS]",
                   help="default: l1flow:2 imle:1 ofp:1 fm:10 ddim:10 ddpm:100")
    q.add_argument("--backends", nargs="*", default=None,
                   help="labels to keep (default: all available: torch-cpu onnxruntime-cpu [torch-cuda "
                        "onnxruntime-cuda onnxruntime-trt tensorrt tensorrt-fp16])")
    q.add_argument("--iters", type=int, default=200, help="timed calls per configuration")
    q.add_argument("--rounds", type=int, default=5, help="interleaved rounds the calls are split into")
    q.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: library default)")
    q.add_argument("--size", choices=("tiny", "default"), default="default",
                   help="architecture of the untrained bundle when no BUNDLE is given")
    q.add_argument("--workdir", default="", help="where variants are written (default: a temporary directory)")
    q.add_argument("--out", default="", help="also write the markdown table to this file")


def run(args: argparse.Namespace) -> int:
    import platform
    import sys
    import tempfile
    from pathlib import Path

    from l1flow_ros.inference.bench import DEFAULT_SAMPLERS, available_backends, bench_inference, format_table

    with tempfile.TemporaryDirectory(prefix="l1flow-bench-") as tmp:
        work = Path(args.workdir or tmp)
        bundle = args.bundle
        if not bundle:
            from l1flow_ros.inference.synthetic import default_bench_bundle

            bundle = str(work / "source")
            default_bench_bundle(bundle, size=args.size)
            print(f"no bundle given: untrained {args.size}-size bundle (latency only)")
        backends = available_backends(args.threads)
        if args.backends:
            backends = [b for b in backends if b.label in args.backends]
            if not backends:
                print(f"l1flow bench: none of {args.backends} is available here")
                return 1
        rows = bench_inference(bundle, work, tuple(args.samplers or DEFAULT_SAMPLERS), backends,
                               iters=args.iters, rounds=args.rounds)
        table = format_table(rows)
    import onnxruntime
    import torch

    head = (f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; python {sys.version.split()[0]}, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
            f"cuda {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    print(head)
    print(table)
    if args.out:
        Path(args.out).write_text(head + "\n\n" + table + "\n")
    return 0
