"""The one thing every runtime gives back: an :class:`Engine`, called on numpy arrays."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class EngineError(RuntimeError):
    """A module cannot be compiled or run by the runtime asked for; the message says why."""


class RuntimeUnavailable(EngineError):
    """The runtime or device asked for is not usable on this machine (not installed, no GPU)."""


class Engine(ABC):
    """A compiled module. ``engine(*arrays) -> outputs``, both in the order of the names.

    Inputs are numpy arrays with the dtypes of the example inputs the engine was compiled with
    (float32 for images and features); dimensions named in ``dynamic_axes`` may differ from the
    example's, the others may not. Outputs are numpy arrays on the host, one per output name,
    in order; nested outputs of the module (e.g. ``(y, (h, c))``) are flattened depth-first.
    """

    #: What runs it: "onnxruntime" or "torch".
    runtime: str
    #: Where it runs: "cpu" or "cuda:N".
    device: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @abstractmethod
    def __call__(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} runtime={self.runtime} device={self.device} inputs={self.input_names}>"
