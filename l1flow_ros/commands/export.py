"""``l1flow export``: write encoder.onnx / policy.onnx into a bundle (parity-checked against torch)."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a bundle's encoder and sampler-unrolled policy to ONNX (checked against torch)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="checkpoint bundle directory (manifest.json + weights.safetensors)")
    p.add_argument(
        "--samplers", nargs="*", default=[], metavar="KIND[:STEPS]",
        help="also export the same network under other samplers, e.g. l1flow:10 (policy.<kind><steps>.onnx); "
             "only samplers the network's prediction supports",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs difference onnxruntime vs torch (default 1e-4)")
    p.add_argument("--no-encoder", action="store_true", help="export only the policy graphs")


def run(args: argparse.Namespace) -> int:
    from l1flow_ros.inference.export import ExportError, export_bundle
    from l1flow_ros.policy.manifest import BundleError

    try:
        report = export_bundle(args.bundle, samplers=args.samplers, opset=args.opset, atol=args.atol,
                               encoder=not args.no_encoder)
    except (BundleError, ExportError, ValueError) as e:
        print(f"l1flow export: {e}")
        return 1
    for line in report.lines():
        print(line)
    print(f"fingerprint {report.fingerprint}")
    return 0
