"""engines: turn a torch module into the fastest runtime on the machine.

ONNX Runtime on the CPU, TensorRT on NVIDIA GPUs, torch itself otherwise, with an engine cache.
It takes an ``nn.Module``, example inputs and dynamic axes, and imports neither ``affbatch`` nor
``training``. The runtimes arrive with the models that need them; what exists so far is the
availability check ``affbatch info`` reports.
"""

from __future__ import annotations

import importlib.util

RUNTIMES = ("onnxruntime", "torch", "tensorrt")


def availability() -> dict[str, str | None]:
    """For each runtime: None when its package is importable here, else why not."""
    return {
        "onnxruntime": None if importlib.util.find_spec("onnxruntime") else "not installed",
        "torch": None if importlib.util.find_spec("torch") else "not installed",
        "tensorrt": None if importlib.util.find_spec("tensorrt") else "not installed (pip install 'affbatch[gpu]')",
    }
