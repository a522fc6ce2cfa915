"""ONNX Runtime: the CPU runtime (and CUDA, when onnxruntime-gpu is what is installed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.base import Engine, RuntimeUnavailable

if TYPE_CHECKING:
    import torch


def available() -> str | None:
    """None when ONNX Runtime imports here, else why not."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime not importable ({e}): pip install onnxruntime"
    return None


def session_options():
    """The session options every affbatch session uses: all optimisations, every core, no spinning."""
    import onnxruntime as ort

    from engines.cpuinfo import threads

    options = ort.SessionOptions()
    # A worker's share of the cores, else every CPU this process may use (its affinity: a
    # container's or taskset's share): not ORT's default of physical cores, which under-uses SMT
    # machines and containers that expose logical CPUs only, nor os.cpu_count(), which
    # oversubscribes a restricted process.
    options.intra_op_num_threads = threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle workers spinning after each run starve the decoder thread and the pre-processing
    # that share the cores: 43 vs 32 frames/s end to end for RetinaFace at 640x360 on 2
    # cores, 56 vs 43 for the network alone (measured while other work ran).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session over an ONNX file, all optimisations on, every core used."""

    runtime = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        input_names: Sequence[str],
        output_names: Sequence[str],
        device: str = "cpu",
        precision: str = "fp32",
    ):
        import onnxruntime as ort

        if precision != "fp32":
            # ORT's CPU kernels for float16 are a patchwork (its GRU has none) and bf16 has fewer.
            raise RuntimeUnavailable(f"onnxruntime runs fp32 here, not {precision}; use --runtime torch or tensorrt")

        options = session_options()
        if device == "cpu":
            providers: list = ["CPUExecutionProvider"]
        else:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeUnavailable(
                    f"--runtime onnxruntime on {device}: this onnxruntime has no CUDA provider "
                    f"(it has {', '.join(ort.get_available_providers())}); use --runtime torch or --device cpu"
                )
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self.onnx_path = Path(onnx_path)
        self.device = device
        self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def run_numpy(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        feed = {name: np.ascontiguousarray(a) for name, a in zip(self.input_names, arrays, strict=True)}
        return tuple(self.session.run(list(self.output_names), feed))

    def run_torch(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        import torch

        arrays = [x.detach().cpu().numpy() for x in inputs]
        return [torch.from_numpy(y) for y in self.run_numpy(arrays)]
