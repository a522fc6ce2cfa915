"""Generated clips whose frames carry their own index, for tests and benchmarks.

Each frame shows its source index as a 4x4 grid of black and white cells (16 bits, least
significant bit top-left), large enough to survive lossy codecs and chroma subsampling, so a
decoded frame tells which source frame it is without trusting any timestamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODE_BITS = 16
GRID = 4


def code_frame(index: int, width: int, height: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """An RGB uint8 (height, width, 3) image whose cells encode ``index``.

    With ``rng``, a little noise is added so that encoders cannot treat frames as static.
    """
    if not 0 <= index < 2**CODE_BITS:
        raise ValueError(f"index {index} does not fit in {CODE_BITS} bits")
    ys = np.arange(height) * GRID // height
    xs = np.arange(width) * GRID // width
    cell = ys[:, None] * GRID + xs[None, :]
    bits = (index >> cell) & 1
    image = np.repeat((bits * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    if rng is not None:
        noise = rng.integers(0, 24, size=image.shape, dtype=np.uint8)
        image = np.where(bits[:, :, None] == 1, image - noise, image + noise)
    return image


def read_code(image: np.ndarray) -> int:
    """The index encoded by ``code_frame`` in an RGB or grayscale image (any size)."""
    gray = image.mean(axis=2) if image.ndim == 3 else image.astype(np.float64)
    height, width = gray.shape
    index = 0
    for bit in range(CODE_BITS):
        row, col = divmod(bit, GRID)
        # The middle half of each cell: away from edges that compression blurs.
        y0, y1 = (4 * row + 1) * height // (4 * GRID), (4 * row + 3) * height // (4 * GRID)
        x0, x1 = (4 * col + 1) * width // (4 * GRID), (4 * col + 3) * width // (4 * GRID)
        if gray[y0:y1, x0:x1].mean() > 127:
            index |= 1 << bit
    return index


def write_coded_clip(
    path: str | Path,
    pts: Sequence[int],
    time_base: Fraction,
    *,
    codec: str = "libx264",
    width: int = 64,
    height: int = 48,
    pix_fmt: str = "yuv420p",
    rate: Fraction | int | None = None,
    options: dict[str, str] | None = None,
    rotation: int = 0,
    noise_seed: int | None = None,
) -> Path:
    """Encode one frame per timestamp (``pts`` in ``time_base``); frame i encodes index i.

    ``rotation`` (degrees counter-clockwise) is stored in the display matrix, so a player shows
    the picture turned; the frames themselves are encoded unturned.
    """
    path = Path(path)
    rng = np.random.default_rng(noise_seed) if noise_seed is not None else None
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate or round(1 / float(time_base)) or 30, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(code_frame(i, width, height, rng), format="rgb24")
            frame.pts, frame.time_base = int(p), time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def constant_rate_pts(frames: int, fps: Fraction, time_base: Fraction) -> list[int]:
    """Timestamps of ``frames`` frames at a constant ``fps``, rounded to ``time_base``."""
    step = 1 / (Fraction(fps) * time_base)
    return [round(i * step) for i in range(frames)]
