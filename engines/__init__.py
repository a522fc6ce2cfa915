"""engines: turn a torch module into the fastest runtime on the machine.

ONNX Runtime on the CPU, torch itself elsewhere (TensorRT on NVIDIA GPUs arrives later), with an
on-disk cache of exported ONNX graphs. It takes an ``nn.Module``, example inputs and dynamic
axes, and imports neither ``affbatch`` nor ``training``. Importing it is cheap: torch and ONNX
Runtime are imported when a module is compiled.

    engine = engines.compile(module, (x,), ["x"], ["y"], {"x": {0: "batch"}, "y": {0: "batch"}})
    (y,) = engine(x.numpy())
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engines.base import Engine, EngineError, RuntimeUnavailable

if TYPE_CHECKING:
    import torch

RUNTIMES = ("onnxruntime", "torch", "tensorrt")

__all__ = ["RUNTIMES", "Engine", "EngineError", "RuntimeUnavailable", "availability", "compile"]


def availability() -> dict[str, str | None]:
    """For each runtime: None when its package is importable here, else why not."""
    return {
        "onnxruntime": None if importlib.util.find_spec("onnxruntime") else "not installed",
        "torch": None if importlib.util.find_spec("torch") else "not installed",
        "tensorrt": None if importlib.util.find_spec("tensorrt") else "not installed (pip install 'affbatch[gpu]')",
    }


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
) -> Engine:
    """An :class:`Engine` that computes ``module(*inputs)``, flattened to ``output_names``.

    ``example_inputs``: tensors of the shapes and dtypes the engine will be called with (the
    ``dynamic_axes`` dimensions may vary, as in ``torch.onnx.export``). ``runtime``: ``auto``
    (ONNX Runtime on the CPU, torch on CUDA), ``onnxruntime`` or ``torch``. ``device``: ``cpu``,
    ``cuda``, ``cuda:N`` or ``auto``. For ONNX Runtime the module is exported once (opset
    :data:`engines.onnx_export.OPSET`) and cached under ``cache_dir`` (default
    ``$AFFBATCH_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/affbatch/onnx``, else
    ``~/.cache/affbatch/onnx``); ``cache_extra`` adds the caller's own version to the key. The
    module is put in eval mode (and, for torch, moved to ``device``).
    """
    from engines.build import compile_module

    return compile_module(
        module, example_inputs, input_names, output_names, dynamic_axes, runtime, device, cache_dir, cache_extra
    )
