"""Timing and memory: repeats after a warm-up, medians and spreads, peak RSS and GPU memory.

Peak RSS is the kernel's high-water mark of this process (``VmHWM``), reset before each
measurement (and, in ``affbatch score``, after each video) by writing ``5`` to
``/proc/self/clear_refs`` (Linux >= 4.0), so each figure is the peak *during* that measurement.
Where the reset is not allowed, the figure is the process's peak so far (``getrusage``), which
only grows, and the result says so (``rss_reset: false``). What is already in memory (imported
libraries, loaded models) counts in the peak: the increase over the RSS at the start of the
measurement (``rss_delta_mib``) is given too.
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from affbatch.cli.progress import Progress

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def summarise(count: int, seconds: list[float]) -> dict:
    """``count`` items done in each of the runs that took ``seconds``: rates, median and spread."""
    rates = sorted(count / s for s in seconds if s > 0)
    return rates_summary(rates, count)


def rates_summary(rates: list[float], count: int | None = None) -> dict:
    rates = sorted(rates)
    out = {
        "fps_median": statistics.median(rates),
        "fps_min": rates[0],
        "fps_max": rates[-1],
        "runs": len(rates),
    }
    if count is not None:
        out["frames"] = count
    return out


def timed(fn: Callable[[], object], repeats: int, warmup: Callable[[], object] | None = None) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after one call of ``warmup`` (default: ``fn``)."""
    (warmup or fn)()  # page cache, codec and session initialisation, allocator pools
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Restart the kernel's high-water mark of this process's RSS; False where that is not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def rss_kib() -> int:
    return _status_kib("VmRSS") or _maxrss_kib()


def peak_rss_kib() -> int:
    """Peak RSS since the last ``reset_peak_rss`` (since the start where it cannot be reset)."""
    return _status_kib("VmHWM") or _maxrss_kib()


def _memory(peak_kib: int, start_kib: int, reset: bool, gpu_bytes: int | None) -> dict:
    out = {
        "rss_peak_mib": round(peak_kib / 1024, 1),
        "rss_delta_mib": round(max(peak_kib - start_kib, 0) / 1024, 1),
        "rss_reset": reset,
    }
    if gpu_bytes is not None:
        out["gpu_peak_mib"] = round(gpu_bytes / 2**20, 1)
    return out


class PeakMemory:
    """``with PeakMemory() as mem: ...``, then ``mem.result()``: peak RSS (MiB) during the block,
    the increase over the RSS at its start, and the peak CUDA memory torch allocated (if any)."""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.reset = reset_peak_rss()
        self.start_kib = rss_kib()
        self.cuda = _cuda()
        if self.cuda is not None:
            self.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        self.peak_kib = peak_rss_kib()
        self.gpu_bytes = self.cuda.max_memory_allocated() if self.cuda is not None else None

    def result(self) -> dict:
        return _memory(self.peak_kib, self.start_kib, self.reset, self.gpu_bytes)


def _cuda():
    """torch.cuda when torch is imported and sees a GPU, else None (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


class Stopwatch(Progress):
    """A silent ``affbatch score`` progress that notes, for each video, when it was done
    (perf_counter) and the peak memory since the previous one was done."""

    def __init__(self) -> None:
        self.done: list[dict] = []
        self.cuda = _cuda()
        self._restart()

    def _restart(self) -> None:
        self.reset = reset_peak_rss()
        self.start_kib = rss_kib()
        if self.cuda is not None:
            self.cuda.reset_peak_memory_stats()

    def video_done(self, name: str, status: str, frames: int, seconds: float, error: str | None) -> None:
        gpu = self.cuda.max_memory_allocated() if self.cuda is not None else None
        memory = _memory(peak_rss_kib(), self.start_kib, self.reset, gpu)
        self.done.append({"name": name, "status": status, "frames": frames, "t": time.perf_counter(), "memory": memory})
        self._restart()

    def per_video(self) -> dict[str, dict]:
        """For each video: ``fps``, its frames over the time since the previous video was done
        (None for the first), and ``memory`` over that time. Decoding runs ahead across videos, so
        a video's own ``seconds`` in the manifest overlap the previous one's analysis; the gaps
        between finishes do not."""
        out = {}
        for i, entry in enumerate(self.done):
            if entry["status"] != "ok":
                raise RuntimeError(f"bench video {entry['name']} was not scored ({entry['status']})")
            gap = entry["t"] - self.done[i - 1]["t"] if i else 0.0
            out[entry["name"]] = {"fps": entry["frames"] / gap if gap > 0 else None, **entry}
        return out
