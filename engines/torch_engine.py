"""torch itself: the module in eval mode under ``torch.inference_mode``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from engines.base import Engine, EngineError


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for item in out for t in _flatten(item)]
    raise EngineError(f"module returned {type(out).__name__}; engines handle tensors and (nested) tuples of them")


class TorchEngine(Engine):
    """Runs ``module`` as is (moved to ``device``, put in eval mode: the caller's module itself)."""

    runtime = "torch"

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str], device: str):
        self.module = module.to(device).eval()
        self.device = device
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if len(arrays) != len(self.input_names):
            raise TypeError(f"engine takes {len(self.input_names)} inputs {self.input_names}, got {len(arrays)}")
        with torch.inference_mode():
            inputs = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
            outputs = _flatten(self.module(*inputs))
            if len(outputs) != len(self.output_names):
                raise EngineError(f"module returned {len(outputs)} outputs, output_names has {len(self.output_names)}")
            return tuple(t.cpu().numpy() for t in outputs)
