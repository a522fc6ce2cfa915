"""``affbatch info``: versions, devices, and which backends and runtimes work here (and why not)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from typing import Annotated

import typer

import affbatch
import engines
from affbatch.video import decoders
from engines.cpuinfo import describe as describe_cpu
from engines.cpuinfo import summary as cpu_summary


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpus() -> list[str]:
    """Each CUDA device torch sees: name, compute capability, memory."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(f"cuda:{i} {p.name} (sm {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB)")
    return out


def _auto() -> dict:
    """What ``--runtime auto --device auto`` picks here."""
    try:
        placement = engines.resolve("auto", "auto", "auto")
    except engines.EngineError as exc:  # e.g. neither ONNX Runtime nor torch usable
        return {"runtime": None, "device": None, "precision": None, "why": str(exc)}
    return {"runtime": placement.runtime, "device": placement.device, "precision": placement.precision}


def _cache() -> dict:
    from engines.cache import cache_root
    from engines.catalog import KINDS, entries

    found = entries()
    return {
        "root": str(cache_root()),
        "entries": {kind: sum(e.kind == kind for e in found) for kind in KINDS},
        "bytes": sum(e.bytes for e in found),
    }


def gather() -> dict:
    import av
    import torch

    from engines.build import cuda_unavailable
    from engines.tensorrt_engine import version as tensorrt_version

    return {
        "affbatch": affbatch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # model, AMX/AVX512-BF16/VNNI/AVX2 flags, whether bf16 runs in hardware, the runtimes' own reports
        "cpu": cpu_summary(),
        "versions": {
            "av": av.__version__,
            "ffmpeg (in av)": str(av.ffmpeg_version_info),
            "pyarrow": _version("pyarrow"),
            "numpy": _version("numpy"),
            "torch": torch.__version__,
            "cuda (torch)": torch.version.cuda,
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime"),
            "openvino": _version("openvino"),
            "tensorrt": tensorrt_version(),
            # read from its metadata only: importing it without TensorRT's libraries raises
            "torch-tensorrt (unused)": _version("torch-tensorrt") or _version("torch_tensorrt"),
        },
        "devices": {"cpu": None, "cuda": cuda_unavailable()},
        "gpus": _gpus(),
        # what each decoder can do on the best device here (nvcodec needs a GPU)
        "decoders": decoders.availability("cuda" if cuda_unavailable() is None else "cpu"),
        # {runtime: {device kind: None if it runs there, else why not}}
        "runtimes": engines.availability(),
        "auto": _auto(),
        "cache": _cache(),
    }


def render(info: dict) -> str:
    def status(why: str | None) -> str:
        return "available" if why is None else why

    lines = [f"affbatch {info['affbatch']} on Python {info['python']}, {info['platform']}, {info['cpus']} CPUs"]
    lines.append(f"cpu: {describe_cpu(info['cpu'])}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))
    lines.append("devices:")
    lines += [f"  {k}: {status(v)}" for k, v in info["devices"].items()]
    lines += [f"    {g}" for g in info["gpus"]]
    lines.append("decoders:")
    lines += [f"  {k}: {status(v)}" for k, v in info["decoders"].items()]
    lines.append("runtimes:")
    for name, per_device in info["runtimes"].items():
        reasons = set(per_device.values())
        if len(reasons) == 1 and None not in reasons:  # the same reason everywhere: say it once
            lines.append(f"  {name}: {reasons.pop()}")
        else:
            lines.append(f"  {name}: " + "; ".join(f"{d}: {status(w)}" for d, w in per_device.items()))
    auto = info["auto"]
    if not auto["runtime"]:
        picked = f"nothing runs ({auto['why']})"
    elif "auto" in (auto["runtime"], auto["precision"]):
        picked = f"on {auto['device']}, per model the fastest runtime x precision measured here (bf16 in hardware)"
    else:
        picked = f"{auto['runtime']} on {auto['device']} ({auto['precision']})"
    lines.append(f"auto: {picked}")
    cache = info["cache"]
    counts = ", ".join(f"{n} {kind}" for kind, n in cache["entries"].items())
    lines.append(f"cache: {cache['root']}: {counts} ({cache['bytes'] / 1e6:.1f} MB; affbatch engines list)")
    return "\n".join(lines)


def render_cluster(cluster: dict) -> str:
    lines = [
        f"ray {cluster['ray']} cluster at {cluster['address']}: {len(cluster['nodes'])} nodes, "
        f"{cluster['cpus']} CPUs, {cluster['gpus']} GPUs"
    ]
    for node in cluster["nodes"]:
        lines.append(
            f"  node {node['address']} ({node['node_id'][:12]}): {node['cpus']} CPUs, {node['gpus']} GPUs, "
            f"{node['memory_gb']} GB memory"
        )
    return "\n".join(lines)


def info_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Also report a Ray cluster (auto or ADDRESS): its nodes, CPUs and GPUs.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Versions, devices, and the decoders and runtimes available here (and why not)."""
    info = gather()
    if ray is not None:
        from affbatch.cli.support import CLI
        from affbatch.errors import AffbatchError
        from affbatch.scale.ray_actors import describe_cluster

        try:
            info["ray_cluster"] = describe_cluster(ray)
        except AffbatchError as exc:
            raise CLI.fail(exc) from None
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        typer.echo(render(info) + ("\n" + render_cluster(info["ray_cluster"]) if ray is not None else ""))
