"""Decoding backends. Each lives in its own module and is imported only when it is chosen, so
that ``import affbatch`` works without the GPU libraries a backend may need."""

from __future__ import annotations

import importlib.util

from affbatch.errors import UsageError
from affbatch.video.decoders.base import Decoder, FrameBatch

#: Backends by the name given to ``--decoder``: (module, class, the distribution it needs).
BACKENDS: dict[str, tuple[str, str, str]] = {
    "pyav": ("affbatch.video.decoders.pyav", "PyAVDecoder", "av"),
}

#: The names ``--decoder`` accepts.
CHOICES = ("auto", "pyav", "dali")


def availability() -> dict[str, str | None]:
    """For each backend: None when it can be used here, else why not."""
    out: dict[str, str | None] = {}
    for name, (_, _, dist) in BACKENDS.items():
        out[name] = None if importlib.util.find_spec(dist) else f"not installed (pip install {dist})"
    out["dali"] = "not implemented in this version (PyAV decodes on the CPU)"
    return out


def get_decoder(name: str = "auto") -> Decoder:
    """Instantiate the backend called ``name``; ``auto`` picks the best one available."""
    if name not in CHOICES:
        raise UsageError(f"unknown decoder {name!r}; choose one of {', '.join(CHOICES)}")
    if name == "auto":
        name = "pyav"
    why = availability().get(name)
    if why:
        raise UsageError(f"decoder {name!r} is not available: {why}")
    module, cls, _ = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)()


__all__ = ["BACKENDS", "CHOICES", "Decoder", "FrameBatch", "availability", "get_decoder"]
