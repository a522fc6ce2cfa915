"""``engines.compile``: pick the runtime, export (through the cache) and open the engine."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from engines.base import Engine, EngineError, RuntimeUnavailable
from engines.onnx_export import DynamicAxes

log = logging.getLogger("engines")

RUNTIME_CHOICES = ("auto", "onnxruntime", "torch")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:0`` when torch sees a GPU, else ``cpu``; ``cuda`` -> ``cuda:0``; checked."""
    if not _DEVICE.match(device):
        raise EngineError(f"device {device!r}: choose auto, cpu, cuda or cuda:N")
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise RuntimeUnavailable(f"device {device}: torch sees no CUDA device here; use --device cpu")
        if index >= torch.cuda.device_count():
            raise RuntimeUnavailable(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        return f"cuda:{index}"
    return "cpu"


def resolve_runtime(runtime: str, device: str) -> str:
    """``auto``: ONNX Runtime on the CPU (torch if it is missing), torch on CUDA."""
    from engines.onnxruntime_engine import available

    if runtime not in RUNTIME_CHOICES:
        raise EngineError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    if runtime == "onnxruntime" and (why := available()):
        raise RuntimeUnavailable(why)
    if runtime != "auto":
        return runtime
    if device == "cpu":
        why = available()
        if why is None:
            return "onnxruntime"
        log.warning("runtime auto: %s; falling back to torch on the CPU", why)
        return "torch"
    log.info("runtime auto: torch on %s (TensorRT is not in this version)", device)
    return "torch"


def compile_module(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: DynamicAxes | None = None,
    runtime: str = "auto",
    device: str = "cpu",
    cache_dir: Path | None = None,
    cache_extra: str = "",
) -> Engine:
    device = resolve_device(device)
    runtime = resolve_runtime(runtime, device)
    if runtime == "torch":
        from engines.torch_engine import TorchEngine

        return TorchEngine(module, input_names, output_names, device)
    from engines.cache import cached_onnx
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    path = cached_onnx(module, example_inputs, input_names, output_names, dynamic_axes, cache_dir, cache_extra)
    return OnnxRuntimeEngine(path, input_names, output_names, device)
