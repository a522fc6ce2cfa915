"""Decoding backends. Each lives in its own module and is imported only when it is chosen, so
that ``import affbatch`` works without the GPU libraries a backend may need.

``pyav`` (FFmpeg on the CPU, host numpy frames), ``dali`` (NVIDIA DALI: NVDEC on a GPU, or its
CPU backend for VP8/VP9/MJPEG), ``nvcodec`` (PyNvVideoCodec: NVDEC, GPU only) and ``auto``
(``decoders.auto``: on a CUDA device the GPU decoder, PyAV for the files it cannot take; PyAV
on the CPU). Frames from a host decoder feeding models on a GPU are moved there once, as uint8.
"""

from __future__ import annotations

import importlib.util

from affbatch.errors import UsageError
from affbatch.video.decoders.base import Decoder, DeviceFrames, FrameBatch

#: Backends by the name given to ``--decoder``: (module, class, the module it needs).
BACKENDS: dict[str, tuple[str, str, str]] = {
    "pyav": ("affbatch.video.decoders.pyav", "PyAVDecoder", "av"),
    "dali": ("affbatch.video.decoders.dali", "DaliDecoder", "nvidia.dali"),
    "nvcodec": ("affbatch.video.decoders.nvcodec", "NvCodecDecoder", "PyNvVideoCodec"),
}

#: The names ``--decoder`` accepts.
CHOICES = ("auto", "pyav", "dali", "nvcodec")
#: Backends that decode on the GPU only.
GPU_ONLY = ("nvcodec",)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def availability(device: str = "cpu") -> dict[str, str | None]:
    """For each backend: None when it can be used on ``device`` ("cpu" or "cuda[:N]"), else why not."""
    out: dict[str, str | None] = {}
    for name, (_, _, module) in BACKENDS.items():
        if not _installed(module):
            extra = "av" if name == "pyav" else "'affbatch[gpu]'"
            out[name] = f"not installed (pip install {extra})"
        elif name in GPU_ONLY and not device.startswith("cuda"):
            out[name] = "decodes on an NVIDIA GPU only (--device cuda)"
        else:
            out[name] = None
    return out


def get_decoder(name: str = "auto", device: str = "cpu") -> Decoder:
    """The backend called ``name`` for frames on ``device`` ("cpu" or "cuda[:N]", resolved).

    ``auto``: see ``decoders.auto``. A host backend on a CUDA device is wrapped so that its
    batches move to the device once (``DeviceFrames``).
    """
    if name not in CHOICES:
        raise UsageError(f"unknown decoder {name!r}; choose one of {', '.join(CHOICES)}")
    if name == "auto":
        from affbatch.video.decoders.auto import auto_decoder

        return auto_decoder(device, availability(device), get_decoder)
    why = availability(device).get(name)
    if why:
        raise UsageError(f"decoder {name!r} is not available: {why}")
    module, cls, _ = BACKENDS[name]
    backend = getattr(importlib.import_module(module), cls)
    if name == "pyav":
        decoder = backend()
        return DeviceFrames(decoder, device) if device.startswith("cuda") else decoder
    return backend(device)


__all__ = ["BACKENDS", "CHOICES", "Decoder", "DeviceFrames", "FrameBatch", "availability", "get_decoder"]
