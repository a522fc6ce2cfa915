"""engines: turn a torch module into the fastest runtime on the machine.

ONNX Runtime on the CPU, OpenVINO on CPUs with bf16 in hardware (AMX, AVX512-BF16), TensorRT
on NVIDIA GPUs (all from the same cached ONNX graph), torch itself anywhere, with on-disk caches
of exported graphs and built engines. It takes an
``nn.Module``, example inputs and dynamic axes, and imports neither ``affbatch`` nor
``training``. Importing it is cheap: torch, ONNX Runtime and TensorRT are imported when a
module is compiled.

    engine = engines.compile(module, (x,), ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}})
    (y,) = engine(x.numpy())           # numpy in, numpy out
    (y,) = engine(x.cuda())            # torch in, torch out (on the engine's device)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engines.base import PRECISIONS, Engine, EngineError, EngineOptions, RuntimeUnavailable
from engines.placement import (
    DEVICES,
    PRECISION_CHOICES,
    RUNTIME_CHOICES,
    RUNTIMES,
    Placement,
    check_device,
    check_precision,
    check_runtime,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "PRECISION_CHOICES",
    "RUNTIMES",
    "RUNTIME_CHOICES",
    "Engine",
    "EngineError",
    "EngineOptions",
    "Placement",
    "RuntimeUnavailable",
    "availability",
    "check_device",
    "check_precision",
    "check_runtime",
    "compile",
    "resolve",
]


def availability() -> dict[str, dict[str, str | None]]:
    """For each runtime and device kind: None when it can run here, else why not.

    ``{"onnxruntime": {"cpu": None, "cuda": "no CUDA provider in this onnxruntime build"}, ...}``;
    a runtime that is not installed gives the same reason for every device.
    """
    from engines.build import cuda_unavailable
    from engines.onnxruntime_engine import available as onnxruntime_unavailable
    from engines.openvino_engine import available as openvino_unavailable
    from engines.tensorrt_engine import available as tensorrt_unavailable

    no_cuda = cuda_unavailable()
    result: dict[str, dict[str, str | None]] = {}
    why = onnxruntime_unavailable()
    if why is None:
        import onnxruntime

        gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        result["onnxruntime"] = {"cpu": None, "cuda": no_cuda or (None if gpu else "no CUDA provider in this build")}
    else:
        result["onnxruntime"] = {"cpu": why, "cuda": why}
    result["torch"] = {"cpu": None, "cuda": no_cuda}
    why = openvino_unavailable()
    result["openvino"] = {"cpu": why, "cuda": why or "runs on the CPU here"}
    why = tensorrt_unavailable()
    result["tensorrt"] = {"cpu": why or "CUDA devices only", "cuda": why or no_cuda}
    return result


def resolve(runtime: str = "auto", device: str = "auto", precision: str = "auto") -> Placement:
    """The :class:`Placement` that ``auto`` picks here, or the one asked for if it can run here;
    :class:`RuntimeUnavailable` says why not. Callers resolve once per run and compile every
    model of the run with the result."""
    from engines.build import resolve

    return resolve(runtime, device, precision)


def compile(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    runtime: str = "auto",
    device: str = "cpu",
    cache_dir: Path | None = None,
    cache_extra: str = "",
    precision: str = "fp32",
    options: EngineOptions | None = None,
) -> Engine:
    """An :class:`Engine` that computes ``module(*inputs)``, flattened to ``output_names``.

    ``example_inputs``: tensors of the shapes and dtypes the engine will be called with (the
    ``dynamic_axes`` dimensions may vary, as in ``torch.onnx.export``). ``runtime``: ``auto``
    (TensorRT on CUDA when installed, else torch; ONNX Runtime on the CPU), ``onnxruntime``,
    ``torch`` or ``tensorrt``. ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    ``precision``: ``fp32``, or ``fp16``/``bf16`` on CUDA (torch by autocast, TensorRT by its
    builder); inputs and outputs stay float32. ``options``: :class:`EngineOptions` (TensorRT
    shape profiles, CUDA graphs, channels-last, ...).

    For ONNX Runtime and TensorRT the module is exported once (opset
    :data:`engines.onnx_export.OPSET`) and cached under ``cache_dir`` (default
    ``$AFFBATCH_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/affbatch/onnx``, else
    ``~/.cache/affbatch/onnx``); ``cache_extra`` adds the caller's own version to the key.
    TensorRT engines are cached in ``<cache root>/tensorrt`` (or ``options.engine_dir``), keyed
    by the graph's sha256, the TensorRT version, the GPU, the precision and the shape profile. The module is put in eval
    mode (and, for torch, moved to ``device``). Raises :class:`RuntimeUnavailable` when the
    runtime, device or precision cannot run here, with the reason.
    """
    from engines.build import compile_module

    return compile_module(
        module, example_inputs, input_names, output_names, dynamic_axes, runtime, device, cache_dir, cache_extra,
        precision, options,
    )  # fmt: skip
