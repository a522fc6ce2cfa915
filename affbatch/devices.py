"""Devices and runtimes named on the command line, checked in one place."""

from __future__ import annotations

import re

from affbatch.errors import UsageError

RUNTIME_CHOICES = ("auto", "onnxruntime", "torch", "tensorrt")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else is a usage error.

    Whether a CUDA device is present is decided where a model is placed on it (``engines``),
    so that a run without a model never needs one.
    """
    if not _DEVICE.match(device):
        raise UsageError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
    return device


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIME_CHOICES:
        raise UsageError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    return runtime
