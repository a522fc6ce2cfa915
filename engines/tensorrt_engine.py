"""TensorRT: engines built from the cached ONNX graph, run on torch CUDA tensors.

``tensorrt`` is imported only here, and only when asked for. Written against TensorRT 10's and
11's Python API (``Builder``, ``OnnxParser``, ``IOptimizationProfile``, timing caches,
``IExecutionContext.set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``).
Precision: TensorRT 10 builds fp16/bf16 from the float32 graph with the FP16/BF16 builder
flags; TensorRT 11 removed those flags (its networks are strongly typed), so fp16 is built
from a float16 copy of the graph (``onnx_export.CastPrecision``) and bf16 is refused (opset 17
has no bfloat16 Conv or GRU).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from engines.base import Engine, EngineError, EngineOptions, RuntimeUnavailable
from engines.locking import file_lock, write_atomically
from engines.profiles import Profile, check_shapes, profile_json

log = logging.getLogger("engines.tensorrt")

INSTALL_HINT = "pip install 'affbatch[gpu]'"


def available() -> str | None:
    """None when TensorRT imports here, else why not ("not installed (...)", or the import's error)."""
    try:
        import tensorrt
    except ImportError:
        return f"not installed ({INSTALL_HINT})"
    except Exception as exc:  # broken installs raise plain Exceptions (missing libnvinfer), not ImportError
        return f"installed but does not import: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    major = int(tensorrt.__version__.split(".")[0])
    if major < 10:
        return f"version {tensorrt.__version__}: affbatch needs TensorRT 10 or later ({INSTALL_HINT})"
    return None


def _trt():
    if (why := available()) is not None:
        raise RuntimeUnavailable(f"tensorrt: {why}")
    import tensorrt

    return tensorrt


def version() -> str | None:
    return None if available() else _trt().__version__


_LOGGER = None


def _logger():
    """One logger for every builder and runtime (TensorRT keeps a pointer to it): TensorRT's
    messages go to Python logging, never to stdout, where ``--json`` output goes."""
    global _LOGGER
    if _LOGGER is None:
        trt = _trt()
        severity = trt.ILogger.Severity
        levels = {
            severity.INTERNAL_ERROR: logging.ERROR,
            severity.ERROR: logging.ERROR,
            severity.WARNING: logging.WARNING,
            severity.INFO: logging.DEBUG,
            severity.VERBOSE: logging.NOTSET,
        }

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, level, msg):
                py_level = levels.get(level, logging.DEBUG)
                if py_level and log.isEnabledFor(py_level):
                    log.log(py_level, "%s", msg)

        _LOGGER = _Logger()
    return _LOGGER


def _index(device: str) -> int:
    return int(device.partition(":")[2] or 0)


def graph_dtype(precision: str) -> torch.dtype | None:
    """The dtype the ONNX graph must be exported in for ``precision`` (None: float32, as is)."""
    trt = _trt()
    if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
        return torch.float16
    if precision == "bf16" and not hasattr(trt.BuilderFlag, "BF16"):
        raise RuntimeUnavailable(
            f"tensorrt {trt.__version__}: bf16 needs a bfloat16 ONNX graph, which opset 17 cannot express "
            "(no bfloat16 Conv or GRU); use precision fp16 or fp32"
        )
    return None


def key_fields(
    onnx_sha256: str,
    device: str,
    precision: str,
    profile: Profile,
    options: EngineOptions,
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> dict:
    """Everything a built engine depends on: its engine-cache key."""
    trt = _trt()
    index = _index(device)
    major, minor = torch.cuda.get_device_capability(index)
    return {
        "onnx_sha256": onnx_sha256,
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(index),
        "compute_capability": f"{major}.{minor}",
        "precision": precision,
        "profile": profile_json(profile),
        "inputs": list(input_names),
        "outputs": list(output_names),
        "options": options.key(),
    }


def timing_cache_path(folder: Path, fields: dict) -> Path:
    """One timing cache per TensorRT version and GPU (timings are not portable across either)."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", fields["gpu"]).strip("-")
    return Path(folder) / f"timing-trt{fields['tensorrt']}-{gpu}-sm{fields['compute_capability']}.cache"


def build_plan(
    onnx_path: Path,
    profile: Profile,
    precision: str,
    device: str,
    options: EngineOptions,
    timing_cache: Path | None = None,
) -> bytes:
    """Parse the ONNX graph, build a serialized engine for ``profile`` and ``precision``."""
    trt = _trt()
    with torch.cuda.device(_index(device)):
        builder = trt.Builder(_logger())
        network = builder.create_network(0)  # explicit batch (10), strongly typed (11): both the default
        parser = trt.OnnxParser(network, _logger())
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT {trt.__version__} could not parse {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        if options.workspace_mib:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
        if precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
        elif precision == "fp32" and not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # on by default on Ampere and later
        shapes = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if tensor.name not in profile:
                raise EngineError(f"the ONNX graph has an input {tensor.name!r} the caller did not name")
            if any(d < 0 for d in tuple(tensor.shape)):
                shapes.set_shape(tensor.name, *profile[tensor.name])
        config.add_optimization_profile(shapes)
        cache = None
        if timing_cache is not None:
            data = timing_cache.read_bytes() if timing_cache.exists() else b""
            cache = config.create_timing_cache(data)
            if cache is None and data:  # unreadable: start afresh rather than fail the build
                log.warning("timing cache %s is unreadable; starting a new one", timing_cache)
                cache = config.create_timing_cache(b"")
            if cache is not None:
                config.set_timing_cache(cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"TensorRT {trt.__version__} could not build {onnx_path.name} ({precision}); see the log")
        if cache is not None:
            data = bytes(config.get_timing_cache().serialize())
            with file_lock(timing_cache.with_name(timing_cache.name + ".lock")):
                write_atomically(timing_cache, lambda tmp: tmp.write_bytes(data))
        return bytes(plan)


class DeserializeError(EngineError):
    """The runtime refused a plan (built by another TensorRT, for another GPU, or damaged)."""


def _torch_dtypes(trt) -> dict:
    names = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "INT8": torch.int8,
        "UINT8": torch.uint8,
        "BOOL": torch.bool,
    }
    return {getattr(trt.DataType, n): t for n, t in names.items() if hasattr(trt.DataType, n)}


class TensorRTEngine(Engine):
    """A deserialized plan and one execution context. Calls are serialised (a context runs one
    inference at a time); inputs larger than the profile along ``split`` (the batch axis) are
    run in chunks."""

    runtime = "tensorrt"

    def __init__(
        self,
        plan: bytes,
        input_names: Sequence[str],
        output_names: Sequence[str],
        device: str,
        precision: str,
        profile: Profile,
        split: str | None = None,
    ):
        trt = _trt()
        self.device, self.precision, self.profile, self._split = device, precision, profile, split
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)
        self._device_index = _index(device)
        with torch.cuda.device(self._device_index):
            self._runtime = trt.Runtime(_logger())
            self.engine = self._runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise DeserializeError(f"TensorRT {trt.__version__} could not deserialize the engine")
            self.context = self.engine.create_execution_context()
            self._stream = torch.cuda.Stream(self._device_index)
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if missing := [n for n in (*self.input_names, *self.output_names) if n not in names]:
            raise EngineError(f"the engine has no tensors named {missing} (it has {sorted(names)})")
        to_torch = _torch_dtypes(trt)
        self._dtypes = {n: to_torch[self.engine.get_tensor_dtype(n)] for n in names}
        self._lock = threading.Lock()

    def run_torch(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        xs = [
            x.to(device=self.device, dtype=self._dtypes[name], non_blocking=True).contiguous()
            for name, x in zip(self.input_names, inputs, strict=True)
        ]
        check_shapes(self.profile, {n: tuple(x.shape) for n, x in zip(self.input_names, xs, strict=True)}, self._split)
        limit = self.profile[self.input_names[0]][2][0] if self._split else None
        if limit is not None and xs[0].shape[0] > limit:
            parts = [self._run([x[i : i + limit] for x in xs]) for i in range(0, xs[0].shape[0], limit)]
            return [torch.cat(chunks) for chunks in zip(*parts, strict=True)]
        return self._run(xs)

    def _run(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        with self._lock, torch.cuda.device(self._device_index):
            for name, x in zip(self.input_names, xs, strict=True):
                if not self.context.set_input_shape(name, tuple(x.shape)):
                    raise EngineError(f"TensorRT refused shape {tuple(x.shape)} for input {name!r}")
                self.context.set_tensor_address(name, x.data_ptr())
            outputs = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise EngineError(f"output {name!r} has a data-dependent shape {shape}; not supported here")
                out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                self.context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            current = torch.cuda.current_stream(self._device_index)
            stream = current
            if current.cuda_stream == 0:
                # The legacy default stream makes TensorRT synchronise after every enqueue: run on
                # a stream of our own, ordered after the work that made the inputs.
                stream = self._stream
                stream.wait_stream(current)
                for t in (*xs, *outputs):
                    t.record_stream(stream)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineError("TensorRT failed to run the engine (execute_async_v3 returned False)")
            if stream is not current:
                current.wait_stream(stream)
        return [o.float() if o.is_floating_point() and o.dtype != torch.float32 else o for o in outputs]
