"""Native TensorRT backend: engine from the bundle's ONNX, cached, pre-allocated, CUDA graph.

- The engine is built from the ONNX file on first use and cached beside the bundle
  (:mod:`l1flow_ros.inference.engine_cache`), keyed by GPU model, TensorRT version, ONNX
  hash, precision and batch profile; a valid cached engine is never rebuilt.
- fp16: TensorRT 11 only builds strongly typed networks (the FP16 builder flag is
  gone), so fp16 engines are built from an fp16 copy of the ONNX with fp32 inputs and
  outputs (:func:`l1flow_ros.inference.onnx_fp16.convert_float_to_float16`).
- Input and output buffers (pinned host + device) are allocated once for a fixed batch;
  a call copies inputs into pinned memory and replays one CUDA graph (H2D copies, the
  engine, the D2H copy) captured at the first call, or enqueues the same work when
  capture is not possible.

``tensorrt`` and ``cuda-python`` (requirements/gpu.txt) are imported only here, only
when this backend is opened.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from l1flow_ros.inference.backends import BackendError
from l1flow_ros.inference.engine_cache import (
    DeviceIdentity,
    EngineCache,
    EngineKey,
    default_cache_dir,
    get_or_build,
)


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise BackendError("the tensorrt backend needs cuda-python: pip install -r requirements/gpu.txt") from e
    return cudart


def _trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendError("the tensorrt backend needs TensorRT: pip install -r requirements/gpu.txt") from e
    return trt


def _check(result):
    """cuda-python calls return (err, *values): raise on error, return the values."""
    err, *values = result
    cudart = _cudart()
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise BackendError(f"CUDA error {name!r}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_identity(device: int = 0) -> DeviceIdentity:
    """GPU model, compute capability and TensorRT version of this machine."""
    cudart = _cudart()
    trt = _trt()
    props = _check(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return DeviceIdentity(gpu_name=name.strip("\x00 "), compute_capability=f"{props.major}.{props.minor}",
                          trt_version=str(trt.__version__))


def build_engine(onnx_path: Path, max_batch: int = 1, workspace_bytes: int = 1 << 30) -> bytes:
    """Serialized engine for ``onnx_path`` with a batch profile 1..max_batch (opt 1)."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        # TensorRT 10: opt in to strong typing (precision from the ONNX); 11: the only mode.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = list(t.shape)
        rest = shape[1:]
        if any(d < 0 for d in rest):
            raise BackendError(f"{onnx_path.name}: input {t.name} has dynamic non-batch dims {shape}")
        profile.set_shape(t.name, (1, *rest), (1, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path.name}")
    return bytes(serialized)


class TrtGraph:
    """One TensorRT engine with fixed-batch pre-allocated buffers. Not thread-safe."""

    def __init__(self, onnx_path: str | Path, fp16: bool = False, cache_dir: str | Path | None = None,
                 allow_build: bool = True, cuda_graph: bool = True, batch: int = 1, max_batch: int = 1) -> None:
        trt = _trt()
        cudart = _cudart()
        self._cudart = cudart
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise BackendError(f"{onnx_path} not found: run `l1flow export` on the bundle first")
        cache = EngineCache(cache_dir or default_cache_dir(onnx_path.parent))
        source = onnx_path
        if fp16:
            source = _fp16_onnx(onnx_path, cache.dir)
        ident = device_identity()
        key = EngineKey.for_onnx(onnx_path, ident, "fp16" if fp16 else "fp32", max_batch)
        engine_path, self.built = get_or_build(cache, onnx_path.stem, key,
                                               lambda: build_engine(source, max_batch), allow_build)
        self.engine_path = engine_path
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT cannot load {engine_path} (built for another GPU or version?)")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(outputs) != 1:
            raise BackendError(f"{onnx_path.name}: expected one output, engine has {outputs}")
        self._bufs: dict[str, tuple[np.ndarray, int, int]] = {}  # name -> (pinned host view, device ptr, bytes)
        for n in self.input_names:
            shape = (batch, *tuple(self.engine.get_tensor_shape(n))[1:])
            self.context.set_input_shape(n, shape)
        for n in (*self.input_names, outputs[0]):
            shape = tuple(self.context.get_tensor_shape(n))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host_ptr = _check(cudart.cudaMallocHost(nbytes))
            host = np.ctypeslib.as_array((ctypes.c_byte * nbytes).from_address(int(host_ptr))).view(dtype).reshape(shape)
            dev = int(_check(cudart.cudaMalloc(nbytes)))
            self.context.set_tensor_address(n, dev)
            self._bufs[n] = (host, dev, nbytes)
        self._out = outputs[0]
        self._use_graph = cuda_graph
        self._graph_exec = None
        self._h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def _enqueue(self) -> None:
        cudart = self._cudart
        for n in self.input_names:
            host, dev, nbytes = self._bufs[n]
            _check(cudart.cudaMemcpyAsync(dev, host.ctypes.data, nbytes, self._h2d, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendError("TensorRT execution failed")
        host, dev, nbytes = self._bufs[self._out]
        _check(cudart.cudaMemcpyAsync(host.ctypes.data, dev, nbytes, self._d2h, self.stream))

    def _capture(self) -> None:
        """Record the whole call (copies + engine) as one CUDA graph; fall back to plain enqueue."""
        cudart = self._cudart
        self._enqueue()  # one plain run first: TensorRT applies deferred shape updates here
        _check(cudart.cudaStreamSynchronize(self.stream))
        try:
            _check(cudart.cudaStreamBeginCapture(self.stream,
                                                 cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            self._enqueue()
            graph = _check(cudart.cudaStreamEndCapture(self.stream))
            self._graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0))
        except BackendError:
            self._use_graph = False
            self._graph_exec = None

    def __call__(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        for n, x in zip(self.input_names, inputs):
            host = self._bufs[n][0]
            if x.shape != host.shape:
                raise ValueError(f"{n}: shape {x.shape}, engine buffers are {host.shape}")
            np.copyto(host, x, casting="same_kind")
        if self._use_graph and self._graph_exec is None:
            self._capture()
        if self._graph_exec is not None:
            _check(self._cudart.cudaGraphLaunch(self._graph_exec, self.stream))
        else:
            self._enqueue()
        _check(self._cudart.cudaStreamSynchronize(self.stream))
        return self._bufs[self._out][0].astype(np.float32, copy=True)

    def close(self) -> None:
        cudart = self._cudart
        if getattr(self, "_bufs", None) is None:
            return
        if self._graph_exec is not None:
            cudart.cudaGraphExecDestroy(self._graph_exec)
        for host, dev, _ in self._bufs.values():
            cudart.cudaFree(dev)
            cudart.cudaFreeHost(host.ctypes.data)
        self._bufs = None
        cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _fp16_onnx(onnx_path: Path, out_dir: Path) -> Path:
    """An fp16 copy of ``onnx_path`` (fp32 inputs / outputs), written once next to the engines."""
    import onnx

    from l1flow_ros.inference.engine_cache import file_sha256
    from l1flow_ros.inference.onnx_fp16 import convert_float_to_float16

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{onnx_path.stem}.{file_sha256(onnx_path)[:16]}.fp16.onnx"
    if not out.is_file():
        model = convert_float_to_float16(onnx.load(str(onnx_path)))
        onnx.save(model, str(out))
    return out
