"""Progress of a ``score`` run: a live bar on a terminal, plain lines when piped.

Work is measured in bytes of video (known up front from the file sizes, so the ETA needs no
extra pass over the files); speed is shown in output frames per second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from affbatch.run import Progress


class LineProgress(Progress):
    """One line per video on ``stream`` (stderr by default): for logs and pipes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.videos = 0
        self.done = 0

    def start(self, videos: int, total_bytes: int) -> None:
        self.videos = videos

    def video_done(self, name: str, status: str, frames: int, seconds: float, error: str | None) -> None:
        self.done += 1
        head = f"[{self.done}/{self.videos}] {name}:"
        if status == "ok":
            rate = f" ({frames / seconds:.0f} frames/s)" if seconds > 0 else ""
            print(f"{head} ok, {frames} frames in {seconds:.1f} s{rate}", file=self.stream, flush=True)
        elif status == "reused":
            print(f"{head} already scored (--resume)", file=self.stream, flush=True)
        else:
            print(f"{head} FAILED: {error}", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        print(message, file=self.stream, flush=True)


class BarProgress(LineProgress):
    """A rich progress bar (frames/s, ETA) with a line per finished video above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self.console = Console(stderr=True)
        super().__init__(self.console.file)
        self.bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[videos]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = None
        self.base = 0  # bytes of finished videos
        self.size = 0  # bytes of the current one
        self.frames = 0
        self.t0 = time.perf_counter()

    def start(self, videos: int, total_bytes: int) -> None:
        super().start(videos, total_bytes)
        self.bar.start()
        self.task = self.bar.add_task("scoring", total=max(total_bytes, 1), videos=f"0/{videos}", rate="")
        self.t0 = time.perf_counter()

    def video_started(self, name: str, size: int) -> None:
        self.size = size
        self.bar.update(self.task, description=_shorten(name))

    def frames_done(self, frames: int, fraction: float) -> None:
        self.frames += frames
        elapsed = time.perf_counter() - self.t0
        rate = f"{self.frames / elapsed:.0f} frames/s" if elapsed > 0 else ""
        self.bar.update(self.task, completed=self.base + fraction * self.size, rate=rate)

    def video_done(self, name: str, status: str, frames: int, seconds: float, error: str | None) -> None:
        self.bar.console.print(end="")  # keep the lines above the live bar
        super().video_done(name, status, frames, seconds, error)
        self.base += self.size
        self.size = 0
        self.bar.update(self.task, completed=self.base, videos=f"{self.done}/{self.videos}")

    def close(self) -> None:
        self.bar.stop()


def _shorten(name: str, width: int = 32) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def make_progress(enabled: bool = True) -> Progress:
    """A bar on an interactive terminal, plain lines otherwise."""
    if not enabled:
        return Progress()
    if sys.stderr.isatty():
        return BarProgress()
    return LineProgress()
