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
    audio: tuple[float, float] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode one frame per timestamp (``pts`` in ``time_base``); frame i encodes index i.

    ``rotation`` (degrees counter-clockwise) is stored in the display matrix, so a player shows
    the picture turned; the frames themselves are encoded unturned. ``audio=(start_s,
    duration_s)`` adds a silent AAC track, to test timelines that audio starts.
    """
    path = Path(path)
    rng = np.random.default_rng(noise_seed) if noise_seed is not None else None
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate or round(1 / float(time_base)) or 30, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        packets = []
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(code_frame(i, width, height, rng), format="rgb24")
            frame.pts, frame.time_base = int(p), time_base
            packets += stream.encode(frame)
        packets += stream.encode()
        # Give every packet its frame's duration (the gap to the next frame; the last one lasts
        # as long as the one before), as cameras and real muxers do.
        gaps = np.diff(np.asarray(pts, np.int64))
        last = int(gaps[-1]) if len(gaps) else (round(1 / (float(rate) * time_base)) if rate else 1)
        duration = dict(zip((int(p) for p in pts), [*map(int, gaps), last], strict=True))
        for packet in packets:
            if packet.pts in duration:
                packet.duration = duration[packet.pts]
        if audio is not None:
            packets += _silent_audio(container, *audio)
        # Interleave by time, as a real muxer's input would be.
        packets.sort(key=lambda pk: float((pk.dts if pk.dts is not None else 0) * pk.time_base))
        for packet in packets:
            container.mux(packet)
    return path


def _silent_audio(container, start_s: float, duration_s: float, rate: int = 48000) -> list:
    stream = container.add_stream("aac", rate=rate, layout="mono")
    stream.time_base = Fraction(1, rate)
    packets = []
    samples = 1024
    start = round(start_s * rate)
    for offset in range(0, round(duration_s * rate), samples):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start + offset, Fraction(1, rate)
        packets += stream.encode(frame)
    packets += stream.encode()
    return packets


def constant_rate_pts(frames: int, fps: Fraction, time_base: Fraction) -> list[int]:
    """Timestamps of ``frames`` frames at a constant ``fps``, rounded to ``time_base``."""
    step = 1 / (Fraction(fps) * time_base)
    return [round(i * step) for i in range(frames)]
