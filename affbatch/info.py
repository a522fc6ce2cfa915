"""``affbatch info``: versions, devices, and which backends and runtimes work here (and why not)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform

import affbatch
import engines
from affbatch import decoders


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda() -> tuple[list[str], str | None]:
    """(GPU names, why none) without importing torch unless it is installed."""
    if importlib.util.find_spec("torch") is None:
        return [], "torch not installed"
    import torch

    if not torch.cuda.is_available():
        return [], "no CUDA device"
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], None


def gather() -> dict:
    import av

    gpus, no_gpu = _cuda()
    runtimes = engines.availability()
    return {
        "affbatch": affbatch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {
            "av": av.__version__,
            "ffmpeg (in av)": str(av.ffmpeg_version_info),
            "pyarrow": _version("pyarrow"),
            "numpy": _version("numpy"),
            "torch": _version("torch"),
            "onnxruntime": _version("onnxruntime"),
        },
        "devices": {"cpu": None, "cuda": None if gpus else no_gpu},
        "gpus": gpus,
        "decoders": decoders.availability(),
        "runtimes": runtimes,
    }


def render(info: dict) -> str:
    def status(why: str | None) -> str:
        return "available" if why is None else why

    lines = [f"affbatch {info['affbatch']} on Python {info['python']}, {info['platform']}, {info['cpus']} CPUs"]
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
    lines.append("devices:")
    lines += [f"  {k}: {status(v)}" for k, v in info["devices"].items()]
    lines += [f"    {g}" for g in info["gpus"]]
    lines.append("decoders:")
    lines += [f"  {k}: {status(v)}" for k, v in info["decoders"].items()]
    lines.append("runtimes:")
    lines += [f"  {k}: {status(v)}" for k, v in info["runtimes"].items()]
    return "\n".join(lines)
