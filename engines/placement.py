"""The one vocabulary of where and how a model runs: runtimes, devices and precisions.

Every caller (``affbatch score``, ``affbatch engines build``, ``affbatch-train``, the bench)
checks the names it is given here, without importing torch, and resolves ``auto`` once per run
with :func:`engines.resolve`, which returns a :class:`Placement`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engines.base import PRECISIONS, EngineError

#: What runs a compiled module (``auto``'s choice: see ``engines.build``). openvino: CPU only.
RUNTIMES = ("onnxruntime", "torch", "tensorrt", "openvino")
RUNTIME_CHOICES = ("auto", *RUNTIMES)
PRECISION_CHOICES = ("auto", *PRECISIONS)
#: Device kinds; a device is written ``cpu``, ``cuda`` or ``cuda:N``.
DEVICES = ("cpu", "cuda")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else is an :class:`EngineError`.

    Whether a CUDA device is present is decided when the device is resolved, so that a run
    without a model never needs one.
    """
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise EngineError(f"device {device!r}: choose auto, cpu, cuda or cuda:N")
    return device


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIME_CHOICES:
        raise EngineError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    return runtime


def check_precision(precision: str, allow_auto: bool = True) -> str:
    choices = PRECISION_CHOICES if allow_auto else PRECISIONS
    if precision not in choices:
        raise EngineError(f"precision {precision!r}: choose one of {', '.join(choices)}")
    return precision


@dataclass(frozen=True)
class Placement:
    """A resolved choice: ``runtime`` (one of :data:`RUNTIMES`), ``device`` (``cpu`` or
    ``cuda:N``) and ``precision`` (one of :data:`~engines.base.PRECISIONS`).

    On a CPU with bf16 in hardware, ``runtime`` and ``precision`` may stay ``auto``: each model
    then gets its own fastest runtime x precision when it is compiled (``engines.autotune``),
    and the engine says which (``engine.runtime``, ``engine.precision``)."""

    runtime: str
    device: str
    precision: str = "fp32"

    @property
    def per_model(self) -> bool:
        """Whether each model's runtime x precision is chosen when it is compiled."""
        return "auto" in (self.runtime, self.precision)

    def __str__(self) -> str:
        if self.per_model:
            return f"per model, the fastest measured on {self.device} (runtime {self.runtime}, {self.precision})"
        return f"{self.runtime} on {self.device} ({self.precision})"
