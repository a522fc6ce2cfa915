"""The models affbatch compiles, as ``engines`` sees them: one spec each, for the parity tests on
every runtime (CPU here, CUDA in test_engines_gpu.py), the ONNX-graph checks and the GPU benchmark.

Weights: the packaged ones (detector, prior) or seeded random ones (vggface-gru-attn), so every
run compares the same numbers. Imports no PyAV: the GPU machine has none.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

#: Largest error allowed, relative to the largest magnitude of torch's float32 output on the CPU.
#: fp32: rounding and kernel order only (ONNX Runtime, cuDNN without TF32, TensorRT without TF32).
#: fp16: 11-bit mantissa through 13 convolutions or 80 GRU steps. bf16: 8-bit mantissa.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 8e-2}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    make: Callable[[], torch.nn.Module]
    #: inputs(size, seed) -> input tensors; size is (batch,) or (batch, time) or (batch, h, w)
    inputs: Callable[[tuple[int, ...], int], tuple[torch.Tensor, ...]]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict
    #: the size of the example inputs the module is compiled with
    example: tuple[int, ...]
    cpu_sizes: tuple[tuple[int, ...], ...]
    gpu_sizes: tuple[tuple[int, ...], ...]
    #: output frames per batch element (a sequence of T frames counts T)
    frames: Callable[[tuple[int, ...]], int] = lambda size: size[0]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return self.inputs(self.example, 0)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _crops(size: tuple[int, ...], seed: int) -> tuple[torch.Tensor, ...]:
    return (torch.rand(size[0], 3, 96, 96, generator=_generator(seed)) * 2 - 1,)


def _frames(size: tuple[int, ...], seed: int) -> tuple[torch.Tensor, ...]:
    batch, height, width = size
    # BGR minus biubug6's means, as the detector's pre-processing gives it
    return (torch.rand(batch, 3, height, width, generator=_generator(seed)) * 255 - 117,)


def _features(size: tuple[int, ...], seed: int) -> tuple[torch.Tensor, ...]:
    batch, steps = size
    return (torch.randn(batch, steps, 4096, generator=_generator(seed)).clamp(min=0),)


def _paper_model():
    """A fresh copy each time (engines move and convert the modules they are given), same weights."""
    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    torch.manual_seed(0)
    return VGGFaceGRUAttention().eval()


def _detector():
    from safetensors.torch import load_file

    from affbatch.faces.detector import PACKAGED_WEIGHTS
    from affbatch.models import retinaface as rf

    return rf.build(load_file(str(PACKAGED_WEIGHTS)), "mobilenet0.25").eval()


def _prior():
    from affbatch.models.expression_prior import load_expression_prior

    return load_expression_prior().eval()


def _temporal():
    from affbatch.affect.runners import TemporalOutputs

    return TemporalOutputs(_paper_model().temporal).eval()


_PRIORS = {"loc": {0: "batch", 1: "priors"}, "conf": {0: "batch", 1: "priors"}, "landmarks": {0: "batch", 1: "priors"}}

SPECS = (
    ModelSpec(
        "detector",
        _detector,
        _frames,
        ("input",),
        ("loc", "conf", "landmarks"),
        {"input": {0: "batch", 2: "height", 3: "width"}, **_PRIORS},
        (1, 64, 64),
        cpu_sizes=((1, 64, 64), (3, 96, 160)),
        gpu_sizes=((1, 384, 640), (32, 384, 640), (4, 640, 480)),
    ),
    ModelSpec(
        "prior",
        _prior,
        _crops,
        ("crops",),
        ("valence_arousal",),
        {"crops": {0: "faces"}, "valence_arousal": {0: "faces"}},
        (2,),
        cpu_sizes=((1,), (5,), (33,)),
        gpu_sizes=((1,), (32,), (256,)),
    ),
    ModelSpec(
        "vggface-cnn",
        lambda: _paper_model().cnn,
        _crops,
        ("crops",),
        ("features",),
        {"crops": {0: "faces"}, "features": {0: "faces"}},
        (2,),
        cpu_sizes=((1,), (4,)),
        gpu_sizes=((1,), (32,), (257,)),  # 257: past the TensorRT profile's 256, run in two chunks
    ),
    ModelSpec(
        "vggface-temporal",
        _temporal,
        _features,
        ("features",),
        ("valence_arousal",),
        {"features": {0: "batch", 1: "time"}, "valence_arousal": {0: "batch", 1: "time"}},
        (1, 3),
        cpu_sizes=((1, 1), (1, 7), (2, 80), (3, 33)),
        gpu_sizes=((1, 80), (32, 80), (4, 1), (2, 200)),
        frames=lambda size: size[0] * size[1],
    ),
)
SPEC_IDS = [s.name for s in SPECS]


def reference(spec: ModelSpec, module: torch.nn.Module, size: tuple[int, ...], seed: int = 1) -> list[np.ndarray]:
    """torch float32 on the CPU: the numbers every runtime is held to (``module`` is left where it is)."""
    if any(p.device.type != "cpu" for p in module.parameters()):
        module = copy.deepcopy(module).cpu()
    with torch.inference_mode():
        out = module(*spec.inputs(size, seed))
    out = out if isinstance(out, tuple | list) else (out,)
    return [t.numpy() for t in out]


def assert_close(actual, expected, precision: str, what: str) -> float:
    """Every output within TOLERANCE[precision] of the reference (relative to its largest
    magnitude); returns the worst relative error."""
    worst = 0.0
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
        assert a.shape == e.shape and a.dtype == e.dtype, f"{what} output {i}: {a.dtype}{a.shape} vs {e.dtype}{e.shape}"
        scale = max(float(np.abs(e).max()), 1e-6)
        error = float(np.abs(a.astype(np.float64) - e).max()) / scale
        worst = max(worst, error)
        assert error <= TOLERANCE[precision], f"{what} output {i}: relative error {error:.2e} > {TOLERANCE[precision]}"
    return worst
