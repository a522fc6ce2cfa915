"""What every runtime gives back (an :class:`Engine`), its options, and the errors it raises."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

#: Arithmetic an engine may run in. Inputs and outputs stay float32 whatever the precision.
PRECISIONS = ("fp32", "fp16", "bf16")


class EngineError(RuntimeError):
    """A module cannot be compiled or run by the runtime asked for; the message says why."""


class RuntimeUnavailable(EngineError):
    """The runtime, device or precision asked for is not usable on this machine (not installed, no GPU)."""


@dataclass(frozen=True)
class EngineOptions:
    """How a runtime compiles a module, beyond runtime, device and precision (defaults defined once here)."""

    #: TensorRT optimisation profile: for a dynamic axis name (``"batch"``, ``"time"``, ...), the
    #: (min, opt, max) size the engine accepts and is tuned for. Names not given here take
    #: :data:`engines.profiles.DEFAULT_RANGES`, else (1, the example's size, max(that, 256)).
    profiles: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    #: torch: run convolutional models with channels-last tensors; None: on CUDA (cuDNN's
    #: tensor-core kernels want NHWC) and in bf16 on the CPU (so do oneDNN's), not in fp32 there.
    channels_last: bool | None = None
    #: torch on CUDA: capture one CUDA graph per input shape and replay it. Pays where kernel
    #: launches dominate (small batches); costs a capture and memory per new shape.
    cuda_graphs: bool = False
    #: TensorRT fp32: allow TF32 tensor-core math (faster, ~1e-3 relative error); off keeps fp32 exact.
    tf32: bool = False
    #: TensorRT: the builder's workspace limit in MiB (None: TensorRT's default).
    workspace_mib: int | None = None
    #: TensorRT: folder of built engines and timing caches (None: ``<cache root>/tensorrt``).
    engine_dir: Path | None = None
    #: TensorRT: keep a timing cache per GPU and TensorRT version, so later builds skip kernel timing.
    timing_cache: bool = True

    def __post_init__(self) -> None:
        for name, sizes in self.profiles.items():
            if len(sizes) != 3 or not 1 <= sizes[0] <= sizes[1] <= sizes[2]:
                raise EngineError(f"profiles[{name!r}] = {tuple(sizes)}: give (min, opt, max), 1 <= min <= opt <= max")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise EngineError(f"workspace_mib {self.workspace_mib}: at least 1")

    def key(self) -> dict[str, Any]:
        """The options that change what TensorRT builds (part of the engine cache key)."""
        return {"tf32": self.tf32, "workspace_mib": self.workspace_mib}


class Engine(ABC):
    """A compiled module: ``engine(*inputs) -> outputs``, both in the order of the names.

    Inputs: all numpy arrays, or all torch tensors, with the dtypes of the example inputs the
    engine was compiled with (float32 for images and features); dimensions named in
    ``dynamic_axes`` may differ from the example's, the others may not. numpy in -> numpy out
    (on the host: one copy in, one copy out); torch in -> torch out, on the engine's device
    (inputs elsewhere are moved there once; on CUDA nothing goes through the host). Floating
    outputs are float32 whatever the precision; nested outputs of the module (``(y, (h, c))``)
    are flattened depth-first.
    """

    #: What runs it: "onnxruntime", "torch", "tensorrt" or "openvino".
    runtime: str
    #: Where it runs: "cpu" or "cuda:N".
    device: str
    #: Arithmetic: "fp32", "fp16" or "bf16".
    precision: str = "fp32"
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def __call__(self, *inputs: Any) -> tuple[Any, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"engine takes {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}")
        if all(isinstance(x, np.ndarray) for x in inputs):
            return self.run_numpy(inputs)
        import torch

        if all(isinstance(x, torch.Tensor) for x in inputs):
            return tuple(self.run_torch(list(inputs)))
        kinds = ", ".join(type(x).__name__ for x in inputs)
        raise TypeError(f"engine inputs must be all numpy arrays or all torch tensors, got {kinds}")

    @abstractmethod
    def run_torch(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Outputs as torch tensors on the engine's device."""

    def run_numpy(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        return tuple(t.cpu().numpy() for t in self.run_torch(tensors))

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} runtime={self.runtime} device={self.device} precision={self.precision} "
            f"inputs={self.input_names}>"
        )
