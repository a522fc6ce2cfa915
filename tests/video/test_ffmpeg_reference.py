"""Output frame k shows the source frame ffmpeg's ``fps=30`` filter emits in slot k.

Each clip's frames encode their own source index; ffmpeg 5.1 (Debian) converts the clip and we
read which source frame each of its output frames shows. affbatch must select the same frames,
start to end, from timestamps alone, and its decoder must deliver exactly those frames.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction as F

import numpy as np
import pytest

from affbatch.video.decoders.pyav import PyAVDecoder
from affbatch.video.framerate import select_frames
from affbatch.video.probe import probe
from tests.support.coded_clips import constant_rate_pts, read_code, write_coded_clip
from tests.support.reference import ffmpeg_codes

# The paper's Table II rates, then common camera and broadcast rates.
RATES = [30, 29, 25, 60, 15, 17, F(30000, 1001), F(24000, 1001), 50, 24, 12, 120, F(60000, 1001)]
CONTAINERS = {
    "mp4-h264": (".mp4", "libx264", None, {}),
    "mkv-h264": (".mkv", "libx264", F(1, 1000), {}),
    "webm-vp9": (".webm", "libvpx-vp9", F(1, 1000), {}),
    "avi-mpeg4": (".avi", "mpeg4", None, {}),
    "mov-mjpeg": (".mov", "mjpeg", None, {"pix_fmt": "yuvj420p"}),
}
W, H = 64, 48


def our_codes(path) -> tuple[list[int], list[int]]:
    """(selected source indices, codes read from the frames our decoder delivers for them)."""
    info = probe(path)
    slots, _ = select_frames(info, "30")
    wanted = np.unique(slots)
    codes = {}
    for batch in PyAVDecoder().frames(info, wanted, batch_size=16):
        for i, image in zip(batch.source_index, batch.images, strict=True):
            codes[int(i)] = read_code(image)
    return slots.tolist(), [codes[int(s)] for s in slots]


def check_against_ffmpeg(ffmpeg, path):
    expected = ffmpeg_codes(ffmpeg, path, W, H)
    slots, decoded = our_codes(path)
    assert slots == expected, f"{path.name}: selection differs from ffmpeg"
    assert decoded == expected, f"{path.name}: decoded frames differ from ffmpeg"
    return expected


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("rate", RATES, ids=lambda r: f"{float(r):g}fps")
def test_constant_rates(ffmpeg, tmp_path, rate, container):
    ext, codec, time_base, extra = CONTAINERS[container]
    time_base = time_base or 1 / F(rate)
    path = write_coded_clip(
        tmp_path / f"clip{ext}",
        constant_rate_pts(41, F(rate), time_base),
        time_base,
        codec=codec,
        rate=F(rate),
        **extra,
    )
    expected = check_against_ffmpeg(ffmpeg, path)
    # The first and last source frames are shown when no frame is dropped; a faster video
    # starts and ends on one of the frames of its first and last 1/30 s.
    if rate <= 30:
        assert (expected[0], expected[-1]) == (0, 40)
    else:
        per_slot = math.ceil(rate / 30)
        assert expected[0] < per_slot and expected[-1] >= 40 - per_slot


def _jitter(rng: random.Random, n: int, low_ms: int, high_ms: int) -> list[int]:
    t, out = 0, []
    for _ in range(n):
        out.append(t)
        t += rng.randint(low_ms, high_ms)
    return out


VFR_PATTERNS = {
    # Phone-camera style jitter around 30 fps.
    "jitter": lambda rng: _jitter(rng, 60, 25, 42),
    # Wide random gaps, slower and faster than 30 fps.
    "random": lambda rng: _jitter(rng, 50, 5, 120),
    # A two-second freeze in the middle (screen recordings, dropped connections).
    "pause": lambda rng: list(range(0, 600, 40)) + list(range(2600, 3200, 40)),
    # Bursts faster than 30 fps then slow stretches.
    "bursts": lambda rng: sorted({b * 300 + k * 4 for b in range(8) for k in range(12)}),
    # Alternating short and long frames (pulldown-like cadence).
    "cadence": lambda rng: list(np.cumsum([0] + [25 if i % 2 else 58 for i in range(45)])),
    # A video that does not start at time zero (its own first timestamp is 0.517 s).
    "late-start": lambda rng: [517 + p for p in _jitter(rng, 40, 30, 37)],
}


@pytest.mark.parametrize("container", ["mkv-h264", "mp4-h264", "webm-vp9"])
@pytest.mark.parametrize("pattern", VFR_PATTERNS)
def test_variable_frame_rate(ffmpeg, tmp_path, pattern, container):
    rng = random.Random(pattern)
    ms = [int(p) for p in VFR_PATTERNS[pattern](rng)]
    ext, codec, _, extra = CONTAINERS[container]
    if ext == ".mp4":
        time_base, pts = F(1, 90000), [p * 90 for p in ms]
    else:
        time_base, pts = F(1, 1000), ms
    path = write_coded_clip(tmp_path / f"vfr{ext}", pts, time_base, codec=codec, **extra)
    check_against_ffmpeg(ffmpeg, path)


@pytest.mark.parametrize("seed", range(6))
def test_random_vfr_with_b_frames(ffmpeg, tmp_path, seed):
    """libx264's default preset reorders frames (B-frames): pts and decode order differ."""
    rng = random.Random(seed)
    ms = _jitter(rng, 45, 5, 120)
    path = write_coded_clip(tmp_path / "b.mkv", ms, F(1, 1000), options={"bf": "3"})
    check_against_ffmpeg(ffmpeg, path)


@pytest.mark.parametrize(
    ("video_start_s", "audio_start_s"),
    [(0.1, 0.0), (0.0217, 0.0), (0.0, 0.05), (0.45, 0.013)],
)
@pytest.mark.parametrize("ext", [".mkv", ".mp4", ".mov", ".ts"])
def test_audio_starting_first_shifts_the_timeline(ffmpeg, tmp_path, video_start_s, audio_start_s, ext):
    """ffmpeg shifts every stream by the file's start time (the earliest first timestamp of any
    stream, AAC priming included where the container keeps it); rounding to 30 fps slots happens
    after that shift."""
    time_base = F(1, 1000) if ext == ".mkv" else F(1, 90000)
    first = round(video_start_s / time_base)
    pts = [first + p for p in constant_rate_pts(40, F(25), time_base)]
    path = write_coded_clip(tmp_path / f"av{ext}", pts, time_base, audio=(audio_start_s, 2.0))
    check_against_ffmpeg(ffmpeg, path)


def test_mpegts_with_its_own_start_time(ffmpeg, tmp_path):
    """MPEG-TS timestamps start at 1.4 s by default; ffmpeg removes that offset."""
    path = write_coded_clip(tmp_path / "clip.ts", constant_rate_pts(40, F(25), F(1, 90000)), F(1, 90000))
    assert probe(path).pts[0] > 0
    check_against_ffmpeg(ffmpeg, path)


def test_native_rate_keeps_every_frame(ffmpeg, tmp_path):
    path = write_coded_clip(tmp_path / "n.mkv", _jitter(random.Random(3), 30, 5, 90), F(1, 1000))
    info = probe(path)
    slots, times = select_frames(info, "native")
    assert slots.tolist() == list(range(30))
    assert ffmpeg_codes(ffmpeg, path, W, H, fps30=False) == list(range(30))
    assert times[0] == 0.0 and np.all(np.diff(times) > 0)


@pytest.mark.parametrize("bframes", ["0", "3"])
@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_raw_elementary_stream_without_timestamps(ffmpeg, tmp_path, codec, bframes):
    """Raw .h264/.hevc files carry no timestamps: frames are numbered at the stream's rate."""
    import subprocess

    # Encoded with a 1/25 s time base, so the bitstream's own timing says 25 fps, as a camera's does.
    mkv = write_coded_clip(tmp_path / "c.mkv", list(range(50)), F(1, 25), codec=codec, options={"bf": bframes})
    raw = tmp_path / ("raw.h264" if codec == "libx264" else "raw.hevc")
    bsf = "h264_mp4toannexb" if codec == "libx264" else "hevc_mp4toannexb"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(mkv), "-c", "copy", "-bsf:v", bsf, str(raw)], check=True)
    info = probe(raw)
    assert info.frames == 50
    expected = check_against_ffmpeg(ffmpeg, raw)
    assert len(expected) == 60
