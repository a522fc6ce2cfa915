"""MPEG-TS timestamp discontinuities are stitched as ffmpeg 5.1's command line stitches them.

Two captures joined byte for byte (as broadcast recordings are): the second one's clock jumps
forward or back. Debian's ffmpeg moves every packet after a jump of more than 10 s (or back
by more than 0.1 s) onto the timeline of the first, and its ``fps=30`` output is the oracle:
the same frames in the same slots, never an hour of one frame held. A container that allows no
discontinuity (Matroska) keeps its jump, and the "broken timestamps" message says how large
it is and where.
"""

from __future__ import annotations

import re
from fractions import Fraction as F

import av
import pytest

from affbatch.errors import VideoError
from affbatch.pipeline import ScoreOptions
from affbatch.run import score_run
from affbatch.video.framerate import select_frames
from affbatch.video.probe import probe
from tests.support.arrow import read
from tests.support.coded_clips import code_frame, write_coded_clip
from tests.video.test_ffmpeg_reference import H, W, check_against_ffmpeg

TS_CLOCK = F(1, 90000)


def joined_ts(path, jump_s: float, *, frames: int = 90, at: int = 45, fps: int = 30, bframes: str = "0",
              vui_rate: bool = True):
    """``frames`` coded frames in MPEG-TS, written as two captures joined byte for byte: from
    frame ``at`` (a keyframe) on, the clock is ``jump_s`` later. The first capture starts at
    1.4 s, or late enough that a jump back stays positive. ``vui_rate``: the encoder's time
    base is one frame, so the bitstream states the frame rate (as cameras' do); otherwise
    90 kHz, so the decoder's rate is 90000 fps (ffmpeg's duration for packets without one)."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = W, H, "yuv420p"
    codec.time_base = F(1, fps) if vui_rate else TS_CLOCK
    codec.framerate = F(fps)
    codec.options = {"bf": bframes, "g": "15", "keyint_min": "15", "sc_threshold": "0"}
    ticks = int(1 / (fps * codec.time_base))
    packets = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(code_frame(i, W, H), format="rgb24")
        frame.pts, frame.time_base = i * ticks, codec.time_base
        packets += codec.encode(frame)
    packets += codec.encode(None)
    split = next(k for k, p in enumerate(packets) if p.pts == at * ticks)
    scale = int(codec.time_base / TS_CLOCK)
    first = round((1.4 + max(-jump_s, 0)) / TS_CLOCK)
    data = b""
    for part, start in ((packets[:split], first), (packets[split:], first + round(jump_s / TS_CLOCK))):
        part_path = path.with_suffix(".part.ts")
        with av.open(str(part_path), "w", format="mpegts") as out:
            stream = out.add_stream("h264", rate=fps)
            stream.width, stream.height, stream.time_base = W, H, TS_CLOCK
            stream.codec_context.extradata = codec.extradata
            for packet in part:
                packet.pts, packet.dts = start + packet.pts * scale, start + packet.dts * scale
                packet.stream, packet.time_base = stream, TS_CLOCK
                out.mux(packet)
        data += part_path.read_bytes()
        part_path.unlink()
    path.write_bytes(data)
    return path


JUMPS = [3600, -3600, 20, -20, 11, -5, -0.5, 5, 0.2]


@pytest.mark.parametrize("vui_rate", [True, False], ids=["vui-30fps", "vui-90kfps"])
@pytest.mark.parametrize("bframes", ["0", "2"])
@pytest.mark.parametrize("jump_s", JUMPS, ids=lambda j: f"{j:+g}s")
def test_jumps_are_stitched_like_ffmpeg(ffmpeg, tmp_path, jump_s, bframes, vui_rate):
    path = joined_ts(tmp_path / "joined.ts", jump_s, bframes=bframes, vui_rate=vui_rate)
    expected = check_against_ffmpeg(ffmpeg, path)
    if abs(jump_s) > 10 or jump_s < -0.1:  # stitched: about the 90 frames, no hour held
        assert 85 <= len(expected) <= 92
    else:  # a small jump forward is a pause: the last frame before it is held
        assert len(expected) >= 90 + round(jump_s * 30) - 3


def test_a_stitched_ts_scores_every_frame_once(ffmpeg, tmp_path):
    path = joined_ts(tmp_path / "joined.ts", 3600)
    expected = check_against_ffmpeg(ffmpeg, path)
    out = tmp_path / "traces.arrow"
    summary = score_run([path], out, ScoreOptions(model="none"))
    assert [(r.status, r.frames) for r in summary.rows] == [("ok", len(expected))]
    assert read(out)["source_frame"].to_pylist() == expected
    assert "1.00 h forward" in probe(path).largest_jump


def test_a_jump_back_states_its_real_size(tmp_path):
    """MPEG-TS clocks are 33-bit: libavformat reads a jump back of an hour as a jump forward of
    25.5 h (the wrap); the description says what happened."""
    info = probe(joined_ts(tmp_path / "back.ts", -3600))
    # An hour back from the frame before the jump is an hour less one frame from frame to frame.
    assert re.fullmatch(r"60\.0 min back at 1\.47 s", info.largest_jump), info.largest_jump


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_broken_timestamps_name_the_jump(tmp_path, ext):
    """Matroska and MP4 allow no discontinuity: ffmpeg keeps the jump (more than a day of one
    frame held), which fails as broken timestamps, saying how far the clock jumps and where."""
    ms = [i * 33 for i in range(30)]
    pts = ms[:15] + [m + 30 * 3600 * 1000 for m in ms[15:]]
    path = write_coded_clip(tmp_path / f"jump{ext}", pts, F(1, 1000), options={"bf": "0"})
    info = probe(path)
    with pytest.raises(VideoError) as caught:
        select_frames(info, "30")
    message = str(caught.value)
    assert message.startswith(f"{path}: broken timestamps: they jump 30.00 h forward at 0.46 s"), message
    assert "\n" not in message
