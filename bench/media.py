"""Clips for benchmarks: moving, textured pictures that compress like camera footage."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_scene(width: int, height: int, frames: int, seed: int = 0):
    """Yield RGB frames: a drifting gradient, two moving discs and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(frames):
        t = i / 30.0
        base = 96 + 64 * np.sin(xx / width * 6.28 + t) * np.cos(yy / height * 3.14 - t / 2)
        image = np.repeat(base[:, :, None], 3, axis=2)
        for k, colour in enumerate(((220, 180, 150), (90, 140, 200))):
            cx = width * (0.3 + 0.4 * k + 0.1 * np.sin(t * (1 + k)))
            cy = height * (0.5 + 0.1 * np.cos(t * (1.3 + k)))
            r = min(width, height) * 0.18
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            image[inside] = colour
        image += rng.normal(0, 3, size=image.shape).astype(np.float32)
        yield np.clip(image, 0, 255).astype(np.uint8)


def write_scene_clip(path: Path, width: int, height: int, fps: int, seconds: float) -> Path:
    """H.264 (libx264, CRF 23, B-frames as in camera and web video) in MP4."""
    frames = round(fps * seconds)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps * 512)
        for i, image in enumerate(moving_scene(width, height, frames)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i * 512, Fraction(1, fps * 512)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
