"""Reference outputs from Debian's ffmpeg command-line tool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from tests.support.coded_clips import read_code


def ffmpeg_frames(ffmpeg: str, path: Path, width: int, height: int, fps30: bool = True, pix_fmt: str = "gray"):
    """Every frame ffmpeg outputs for ``path`` (with ``-vf fps=30`` when ``fps30``), as arrays.

    ``-fps_mode passthrough`` keeps the muxer from adding or dropping frames, so what comes out
    is exactly what the filter emitted.
    """
    args = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path)]
    if fps30:
        args += ["-vf", "fps=30"]
    args += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    raw = subprocess.run(args, capture_output=True, check=True).stdout
    channels = {"gray": 1, "rgb24": 3}[pix_fmt]
    frames = np.frombuffer(raw, np.uint8).reshape(-1, height, width, channels)
    return frames[..., 0] if channels == 1 else frames


def ffmpeg_codes(ffmpeg: str, path: Path, width: int, height: int, fps30: bool = True) -> list[int]:
    """The source index each output frame of ffmpeg shows (read from the coded pictures)."""
    return [read_code(f) for f in ffmpeg_frames(ffmpeg, path, width, height, fps30)]
