"""What this CPU computes in hardware: read once from the OS, checked against the runtimes' own reports.

Machines of the same size differ (FACTS.md): a 2-core AMD EPYC with AVX-512 but no bf16, where
torch's bf16 ran ~500x slower than fp32 (emulated), and a 2-core Intel Xeon with AMX, where bf16
ran ~3x faster than fp32. So whether bf16 is worth running is read here, at run time, never
assumed: from the OS's flags (``/proc/cpuinfo`` on Linux) and, where installed, from what
OpenVINO (``OPTIMIZATION_CAPABILITIES``) and torch (its oneDNN bf16 check, its CPU capability)
say they use. Importing this module is cheap; the runtimes are imported only by
:func:`runtime_reports`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

#: The flags that decide which arithmetic is fast, as Linux names them, best first.
#: amx_bf16: Intel AMX tiles multiply bf16 (Sapphire Rapids and later); avx512_bf16: bf16 dot
#: products in AVX-512 (Cooper Lake, AMD Zen 4+); avx512_vnni / avx_vnni: int8 dot products;
#: avx512_fp16: fp16 arithmetic; avx2: the baseline every runtime here has a kernel for.
FEATURES = (
    "amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "avx512f", "avx2",
)  # fmt: skip
#: Flags that mean bf16 matrix products run in hardware (not emulated).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, logical CPUs and the :data:`FEATURES` flags it has."""

    model: str
    cpus: int
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def features(self) -> list[str]:
        """The :data:`FEATURES` present, in that order."""
        return [f for f in FEATURES if f in self.flags]

    def bf16_unavailable(self) -> str | None:
        """None when bf16 matrix products run in hardware here, else why not (one line)."""
        if any(f in self.flags for f in BF16_FLAGS):
            return None
        if not self.flags:
            return "the CPU's features could not be read (no /proc/cpuinfo): bf16 is not assumed"
        return (
            f"{self.model or 'this CPU'} has no bf16 arithmetic (neither {' nor '.join(BF16_FLAGS)} in its "
            "flags): bf16 would be emulated, hundreds of times slower than fp32"
        )

    def to_json(self) -> dict:
        return {"model": self.model, "cpus": self.cpus, "features": self.features}


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in a ``/proc/cpuinfo`` text."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / ARM
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


@functools.cache
def detect() -> CpuInfo:
    """This machine's :class:`CpuInfo` (read once per process)."""
    path = Path("/proc/cpuinfo")
    model, flags = "", frozenset()
    with contextlib.suppress(OSError):  # not Linux: no flags, so bf16 is not assumed
        model, flags = parse_cpuinfo(path.read_text())
    return CpuInfo(model or platform.processor() or platform.machine(), os.cpu_count() or 1, flags)


def cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or taskset's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads() -> int:
    """Threads one inference session may use: ``AFFBATCH_THREADS`` when set (a worker's share of
    the cores, set by affbatch.scale), else :func:`cores`."""
    given = os.environ.get("AFFBATCH_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else cores()


def runtime_reports() -> dict[str, object]:
    """What each installed runtime says it uses on this CPU (imports them: not for hot paths).

    ``openvino``: its CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (``BF16`` there means it runs
    bf16 natively); ``torch``: its ATen CPU capability and whether oneDNN runs bf16 natively.
    A runtime that is not installed is absent.
    """
    reports: dict[str, object] = {}
    try:
        import torch

        reports["torch"] = {
            "capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        }
    except Exception as exc:  # a torch build without these checks: say so, not fail
        reports["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        import openvino as ov

        reports["openvino"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except ImportError:
        pass
    except Exception as exc:
        reports["openvino"] = {"error": f"{type(exc).__name__}: {exc}"}
    return reports


def summary(with_runtimes: bool = True) -> dict:
    """:class:`CpuInfo` as JSON, whether bf16 runs in hardware (and why not), and the runtimes' reports."""
    info = detect()
    out = info.to_json() | {"bf16": info.bf16_unavailable() is None, "bf16_why_not": info.bf16_unavailable()}
    if with_runtimes:
        out["runtimes"] = runtime_reports()
    return out


def describe(s: dict) -> str:
    """One line of :func:`summary`: model, CPUs, features, bf16 and the runtimes' words for it."""
    line = f"{s['model']}, {s['cpus']} CPUs, features: {' '.join(s['features']) or 'none read'}"
    line += "; bf16: in hardware" if s["bf16"] else f"; bf16: no ({s['bf16_why_not']})"
    runtimes = s.get("runtimes") or {}
    if isinstance(runtimes.get("openvino"), list):
        line += f"; openvino: {' '.join(runtimes['openvino'])}"
    torch_report = runtimes.get("torch")
    if isinstance(torch_report, dict) and "capability" in torch_report:
        line += f"; torch: {torch_report['capability']}, oneDNN bf16 {'yes' if torch_report['mkldnn_bf16'] else 'no'}"
    return line
