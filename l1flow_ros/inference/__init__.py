"""Inference (no ROS): running a checkpoint bundle fast and swapping it safely.

- ``backends``: one protocol, ``open_encoder`` / ``open_policy`` -> ``run`` on numpy arrays,
  over torch (eager), onnxruntime (TensorRT EP -> CUDA EP -> CPU) and native TensorRT
  (``trt_backend``: cached engines, pinned buffers, CUDA graphs; ``engine_cache``,
  ``onnx_fp16``).
- ``export``: ``encoder.onnx`` / ``policy.onnx`` with the sampler unrolled, parity-checked.
- ``runner``: ``PolicyRunner``, normalisation, seeded noise and warm start around a backend.
- ``checkpoint`` / ``hotswap``: validation of a new bundle and the head switch by fingerprint.
- ``config`` / ``service``: the inference node's configuration and its engine (load, check,
  swap by fingerprint, one embedding -> chunk with timing), which the node wraps.
- ``bench`` / ``synthetic``: sampler x backend latency on variants of one architecture.
- ``latency``: rolling latency statistics and the newest-only slot the node hands work through.

The executor's receding-horizon core (scheduler, interpolation, safety limits) is
:mod:`l1flow_ros.control`.
"""
