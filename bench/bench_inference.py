"""Inference latency: every sampler on every available backend, one run, side by side.

    python bench/bench_inference.py [BUNDLE] [--iters 200] [--out inference_table.md]

Same as ``l1flow bench inference``: each sampler (L1 Flow 2-step, IMLE 1-step, OFP
1-step, FM 10-step, DDIM 10, DDPM 100) runs as a variant of one bundle's architecture
(weights shared where shapes match; untrained otherwise: latency only), on torch CPU,
onnxruntime CPU and, where present, torch CUDA, onnxruntime CUDA / TensorRT EP and
native TensorRT (fp32, fp16). Prints p50 / p99 and ratios to FM 10-step and DDPM 100 on
the same backend. Never gates anything on absolute times.
"""

from __future__ import annotations

import sys

from l1flow_ros.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "inference", *sys.argv[1:]]))
