"""Valid files whose headers say more than their data holds are scored, not reported broken.

Trimmed clips (``ffmpeg -ss T -i in.mp4 -c copy``, ``-itsoffset`` with a negative offset) keep
the packets before the cut and an edit list that hides them: the header counts every packet,
ffmpeg shows those the edit list keeps. A Matroska file may declare a duration far beyond its
data. What the container really holds decides (the MP4 index's samples, all present; the last
Matroska block, read), and Debian's ffmpeg is the oracle of which frames are shown.
"""

from __future__ import annotations

import struct
import subprocess
from fractions import Fraction as F

import pytest

from affbatch.pipeline import ScoreOptions
from affbatch.run import score_run
from affbatch.video.probe import probe
from tests.support.arrow import read
from tests.support.coded_clips import constant_rate_pts, write_coded_clip
from tests.support.reference import ffmpeg_codes
from tests.video.test_ffmpeg_reference import H, W, check_against_ffmpeg, our_codes

TRIMS = {
    # name: ffmpeg options before -i, after -i (remuxing with -c copy)
    "ss-1.3": (["-ss", "1.3"], []),
    "ss-0.52": (["-ss", "0.52"], []),
    "itsoffset-0.5": (["-itsoffset", "-0.5"], []),
    "itsoffset-0.37": (["-itsoffset", "-0.37"], []),
    "ss-2.05-to-2.9": (["-ss", "2.05"], ["-to", "0.85"]),
}


@pytest.mark.parametrize("ext", [".mp4", ".mov"])
@pytest.mark.parametrize("audio", [False, True], ids=["video", "with-audio"])
@pytest.mark.parametrize("bframes", ["0", "2"])
@pytest.mark.parametrize("trim", TRIMS)
def test_trimmed_mp4_with_edit_list_scores_like_ffmpeg(ffmpeg, tmp_path, trim, bframes, audio, ext):
    source = write_coded_clip(
        tmp_path / f"src{ext}",
        constant_rate_pts(90, F(30), F(1, 15360)),
        F(1, 15360),
        rate=F(30),
        options={"bf": bframes, "g": "12"},
        audio=(0.0, 3.0) if audio else None,
    )
    before, after = TRIMS[trim]
    trimmed = tmp_path / f"trimmed{ext}"
    subprocess.run(
        [ffmpeg, "-v", "error", *before, "-i", str(source), *after, "-c", "copy", str(trimmed)], check=True
    )
    with open(trimmed, "rb") as f:
        assert b"elst" in f.read()  # the trim is an edit list, as the case wants
    # The frames carry the source clip's numbering: ffmpeg's output frames and ours must show
    # the same pictures, slot for slot.
    expected = ffmpeg_codes(ffmpeg, trimmed, W, H)
    slots, decoded = our_codes(trimmed)
    assert decoded == expected
    assert 10 < len(expected) < 90  # a part of the clip, not all of it
    out = tmp_path / "traces.arrow"
    summary = score_run([trimmed], out, ScoreOptions(model="none"))
    assert [(r.status, r.frames) for r in summary.rows] == [("ok", len(expected))], summary.rows
    assert read(out)["source_frame"].to_pylist() == slots


def _matroska_duration_tag(path, seconds_text: bytes):
    """Rewrite the DURATION tag ffmpeg writes for the video track (same length, so every
    element size stays right)."""
    data = path.read_bytes()
    old = b"00:00:03.0"
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, seconds_text))


def _matroska_info_duration(path, seconds: float):
    """Rewrite the Segment's Info Duration (an 8-byte float, in milliseconds)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88") + 3
    data[at : at + 8] = struct.pack(">d", seconds * 1000)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["tag", "info", "both"])
def test_matroska_declaring_more_than_its_data_scores_every_frame(ffmpeg, tmp_path, where):
    path = write_coded_clip(tmp_path / "long.mkv", constant_rate_pts(90, F(30), F(1, 1000)), F(1, 1000), rate=F(30))
    if where in ("tag", "both"):
        _matroska_duration_tag(path, b"01:00:03.0")
    if where in ("info", "both"):
        _matroska_info_duration(path, 3603.0)
    expected = check_against_ffmpeg(ffmpeg, path)
    assert len(expected) == 90
    assert probe(path).frames == 90
    out = tmp_path / "traces.arrow"
    summary = score_run([path], out, ScoreOptions(model="none"))
    assert [(r.status, r.frames) for r in summary.rows] == [("ok", 90)], summary.rows
    assert read(out)["source_frame"].to_pylist() == expected


@pytest.mark.parametrize("offset", ["-0.02", "-0.5"])
def test_mjpeg_mov_shows_the_frames_its_edit_list_drops_as_ffmpeg_does(ffmpeg, tmp_path, offset):
    """ffmpeg 5.1's MJPEG decoder (libavcodec's receive_frame API) outputs the frames of packets
    an edit list discards: they are scored as ffmpeg shows them."""
    source = write_coded_clip(
        tmp_path / "src.mov", constant_rate_pts(30, F(30), F(1, 30)), F(1, 30), codec="mjpeg", pix_fmt="yuvj420p"
    )
    trimmed = tmp_path / "trimmed.mov"
    subprocess.run(
        [ffmpeg, "-v", "error", "-itsoffset", offset, "-i", str(source), "-c", "copy", str(trimmed)], check=True
    )
    expected = ffmpeg_codes(ffmpeg, trimmed, W, H)
    slots, decoded = our_codes(trimmed)
    assert decoded == expected
    if offset == "-0.02":  # frame 0 starts before the edit: discarded, and shown all the same
        assert expected[0] == 0
    out = tmp_path / "traces.arrow"
    summary = score_run([trimmed], out, ScoreOptions(model="none"))
    assert [(r.status, r.frames) for r in summary.rows] == [("ok", len(expected))], summary.rows


def test_mjpeg_mov_starting_before_its_edit_list(ffmpeg, tmp_path):
    """A first picture stamped before zero: the MOV muxer hides it behind an edit list, ffmpeg 5.1
    still shows it, and the file's start time is that of the pictures the list keeps. The file
    is the fuzz pass's case 86 of seed 7 (timestamps jittered by up to 10 ms), which found it."""
    import random

    import av

    from tests.video.test_fuzz import jitter_timestamps, make_sources, remux

    source = make_sources(tmp_path / "sources")["mov-mjpeg"]
    path = tmp_path / "jittered.mov"
    assert remux(source, path, jitter_timestamps, random.Random("7-86"))
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(container.streams.video[0]) if p.size)
        assert first.pts < 0 and first.is_discard  # the case: a picture the edit list drops
    expected = ffmpeg_codes(ffmpeg, path, W, H)
    slots, decoded = our_codes(path)
    assert decoded == expected and expected[0] == 0
    summary = score_run([path], tmp_path / "traces.arrow", ScoreOptions(model="none"))
    assert [(r.status, r.frames) for r in summary.rows] == [("ok", len(expected))], summary.rows
