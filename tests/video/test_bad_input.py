"""Bad input never stops a run: each bad file becomes a ``failed`` manifest row with a one-line
reason that names the problem, the other videos are complete, and the exit status says so.

Decided behaviours (see ``affbatch.video.probe``):

* A file cut short (an interrupted download, copy or recording) fails as *truncated*. MP4 boxes,
  the Matroska/WebM segment and the AVI RIFF chunk state their own size, so the probe knows
  the file is incomplete; it fails when frames that the header announces (frame count or
  duration) cannot be read. A cut MP4 with its 'moov' index at the end has no index left and
  fails as "truncated or unfinished"; with the index at the start (faststart) it fails naming
  how many of the frames its index lists are readable.
* Garbage over the middle of a small H.264 Matroska file breaks the container's structure: the
  demuxer stops there, and the video fails as *corrupt data*, naming where the frames stop and
  about how many are missing. Garbage inside one frame's data (container intact) makes that
  frame undecodable: the video fails naming how many frames could not be decoded. Never "ok"
  with frames missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from affbatch.cli import app
from affbatch.cli.progress import Progress
from affbatch.errors import TruncatedVideo, VideoError
from affbatch.pipeline import ScoreOptions
from affbatch.run import score_run
from affbatch.video.probe import container_layout, probe
from tests.support.arrow import read
from tests.support.coded_clips import code_frame, constant_rate_pts, write_coded_clip

runner = CliRunner()

GOOD_FRAMES = 30  # every good clip: 30 frames at 30 fps -> output frame k shows source frame k


# -- media ---------------------------------------------------------------------------------------


def clip(path: Path, frames: int = GOOD_FRAMES, fps: Fraction | int = 30, time_base=None, **options) -> Path:
    time_base = time_base or 1 / Fraction(fps)
    pts = constant_rate_pts(frames, Fraction(fps), time_base)
    return write_coded_clip(path, pts, time_base, rate=Fraction(fps), **options)


def faststart(src: Path, dst: Path) -> Path:
    """``src`` remuxed with its 'moov' index before the frames (``-movflags faststart``)."""
    with av.open(str(src)) as source, av.open(str(dst), "w", options={"movflags": "faststart"}) as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            target.mux(packet)
    return dst


def cut(src: Path, dst: Path, fraction: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100, layout="mono")
        for start in range(0, int(seconds * 44100), 1024):
            samples = np.sin(np.arange(start, start + 1024) / 20.0).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 44100, start, Fraction(1, 44100)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def undecodable(path: Path, codec: str = "mpeg4", packets: int = 30) -> Path:
    """A video stream whose packets are random bytes: demuxes fine, decodes to nothing."""
    rng = np.random.default_rng(7)
    time_base = Fraction(1, 25)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(packets):
            packet = av.Packet(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
            packet.pts = packet.dts = i
            packet.time_base = time_base
            packet.stream = stream
            packet.is_keyframe = i == 0
            container.mux(packet)
    return path


def clip_with_long_audio(path: Path, frames: int = GOOD_FRAMES, fps: int = 30, audio_s: float = 3.0) -> Path:
    """A 1 s video with a 3 s AAC track: the file lasts 3 s, its video stream 1 s."""
    rate, samples = 48000, 1024
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, fps)
        audio = container.add_stream("aac", rate=rate, layout="mono")
        packets = []
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(code_frame(i, 64, 48), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            packets += video.encode(frame)
        packets += video.encode()
        for start in range(0, int(audio_s * rate), samples):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            packets += audio.encode(frame)
        packets += audio.encode()
        packets.sort(key=lambda p: float((p.dts or 0) * p.time_base))
        for packet in packets:
            container.mux(packet)
    return path


def avi_with_dropped_frames(path: Path, frames: int = 30, dropped=(10, 11)) -> Path:
    """An AVI whose header counts frames it stores empty (a capture that dropped frames)."""
    time_base = Fraction(1, 25)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        stream.time_base = stream.codec_context.time_base = time_base
        for i in range(frames):
            if i in dropped:
                continue
            frame = av.VideoFrame.from_ndarray(code_frame(i, 64, 48), format="rgb24")
            frame.pts, frame.time_base = i, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def jpeg(path: Path) -> Path:
    """A still picture (JPEG data), whatever ``path``'s extension says."""
    with av.open(str(path), "w", format="image2", options={"update": "1"}) as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        frame = av.VideoFrame.from_ndarray(code_frame(3, 64, 48), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def garbage_over(src: Path, dst: Path, start: int, length: int, seed: int = 0) -> Path:
    data = bytearray(src.read_bytes())
    data[start : start + length] = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


# -- reading results -----------------------------------------------------------------------------


def manifest(out: Path) -> dict[str, dict]:
    rows = read(out.with_name(out.name.replace(".arrow", ".videos.arrow"))).to_pylist()
    assert len({r["video"] for r in rows}) == len(rows)
    return {r["video"]: r for r in rows}


def assert_complete(out: Path, name: str, frames: int = GOOD_FRAMES) -> None:
    """Every output frame 0..frames-1 exactly once, showing source frame k (30 fps clips)."""
    traces = read(out)
    mine = traces.filter(pc.equal(traces["video"], name))
    assert mine["frame"].to_pylist() == list(range(frames)), name
    assert mine["source_frame"].to_pylist() == list(range(frames)), name
    assert manifest(out)[name]["status"] == "ok"
    assert manifest(out)[name]["frames"] == frames


def score_cli(*args: str):
    return runner.invoke(app, ["score", "--model", "none", *args])


# -- each bad input in a run with good videos ----------------------------------------------------


def _mp4_cut(folder: Path) -> Path:
    return cut(clip(folder / "src" / "whole.mp4", noise_seed=1), folder / "bad.mp4")


def _faststart_cut(folder: Path) -> Path:
    whole = faststart(clip(folder / "src" / "plain.mp4", noise_seed=1), folder / "src" / "whole.mp4")
    return cut(whole, folder / "bad.mp4")


def _empty(folder: Path) -> Path:
    (folder / "bad.mp4").write_bytes(b"")
    return folder / "bad.mp4"


def _text(folder: Path) -> Path:
    (folder / "bad.mp4").write_text("these are my notes, not a video\n" * 20)
    return folder / "bad.mp4"


BAD_INPUTS = {
    # name: (make(folder) -> path, words the reason must contain)
    "zero-byte": (_empty, ["empty"]),
    "text-named-mp4": (_text, ["not a video"]),
    "mp4-cut-moov-at-end": (_mp4_cut, ["truncated", "moov"]),
    "mp4-cut-faststart": (_faststart_cut, ["truncated", "frames"]),
    "mkv-cut": (lambda d: cut(clip(d / "src" / "whole.mkv", noise_seed=1), d / "bad.mkv"), ["truncated"]),
    "webm-cut": (
        lambda d: cut(clip(d / "src" / "whole.webm", codec="libvpx-vp9", noise_seed=1), d / "bad.webm"),
        ["truncated"],
    ),
    "avi-cut": (lambda d: cut(clip(d / "src" / "whole.avi", noise_seed=1), d / "bad.avi"), ["truncated"]),
    "audio-only-mp4": (lambda d: audio_only(d / "bad.mp4"), ["no video stream", "audio"]),
    "audio-only-m4a": (lambda d: audio_only(d / "bad.m4a"), ["no video stream", "audio"]),
    "mpeg4-random-packets": (lambda d: undecodable(d / "bad.mp4"), ["no decodable frame"]),
    "mpeg4-random-packets-mkv": (lambda d: undecodable(d / "bad.mkv"), ["no decodable frame"]),
    "missing": (lambda d: d / "bad.mp4", ["not found"]),
    # Still pictures given by name: one rule, a picture is not a video (a folder walk skips .jpg).
    "jpeg-named-mp4": (lambda d: jpeg(d / "bad.mp4"), ["an image (JPEG), not a video"]),
    "photo-jpg": (lambda d: jpeg(d / "photo.jpg"), ["an image (JPEG), not a video"]),
}
#: Not found by a folder walk (skipped by extension): fail only when named.
NOT_WALKED = ("missing", "audio-only-m4a", "photo-jpg")


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_fails_alone(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    folder = Path("videos")
    (folder / "src").mkdir(parents=True)
    make, words = BAD_INPUTS[kind]
    bad = make(folder)
    good_a = clip(folder / "a.mp4")
    good_b = clip(folder / "b.mkv", time_base=Fraction(1, 1000))
    out = Path("traces.arrow")

    # Files as arguments (a folder walk skips .m4a by extension), the bad one in the middle.
    result = score_cli(str(good_a), str(bad), str(good_b), "--out", str(out), "--json")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output

    rows = manifest(out)
    assert list(rows) == [str(good_a), str(bad), str(good_b)]  # input order
    row = rows[str(bad)]
    assert row["status"] == "failed"
    reason = row["error"]
    assert reason and "\n" not in reason
    for word in words:
        assert word in reason, f"{kind}: {reason!r} does not say {word!r}"
    assert str(bad) not in reason  # the video column names the file already
    assert row["frames"] is None
    assert_complete(out, str(good_a))
    assert_complete(out, str(good_b))
    # The reason is on the terminal too, and in the JSON summary.
    assert f"failed: {bad}: {reason}" in result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["failed"] == [{"video": str(bad), "error": reason}] and summary["ok"] == 2


def test_all_bad_inputs_in_one_folder(tmp_path):
    """One run over a folder holding every kind of bad file between good ones."""
    folder = tmp_path / "videos"
    (folder / "src").mkdir(parents=True)
    expected = {}
    for kind, (make, words) in BAD_INPUTS.items():
        if kind in NOT_WALKED:
            continue
        sub = folder / kind
        (sub / "src").mkdir(parents=True)
        bad = make(sub)
        shutil.rmtree(sub / "src")
        expected[bad.relative_to(folder).as_posix()] = words
        clip(sub / "ok.mp4")
    jpeg(folder / "holiday.jpg")  # a folder's pictures are skipped, not failed
    out = tmp_path / "traces.arrow"
    result = score_cli(str(folder), "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    rows = manifest(out)
    assert len(rows) == 2 * len(expected) and "holiday.jpg" not in rows
    for name, words in expected.items():
        assert rows[name]["status"] == "failed", name
        assert all(w in rows[name]["error"] for w in words), (name, rows[name]["error"])
    for name in rows:
        if name.endswith("/ok.mp4"):
            assert_complete(out, name)


def test_exit_status_is_0_when_nothing_failed(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    clip(folder / "a.mp4")
    clip(folder / "b.webm", codec="libvpx-vp9", time_base=Fraction(1, 1000))
    out = tmp_path / "traces.arrow"
    result = score_cli(str(folder), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "failed" not in result.output
    assert_complete(out, "a.mp4")
    assert_complete(out, "b.webm")


def test_debug_keeps_going_on_bad_input(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    clip(folder / "a.mp4")
    (folder / "b.mp4").write_bytes(b"")
    out = tmp_path / "traces.arrow"
    result = runner.invoke(app, ["--debug", "score", "--model", "none", str(folder), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert manifest(out)["b.mp4"]["error"] == "empty file (0 bytes)"
    assert_complete(out, "a.mp4")


# -- truncation: every cut fails, and valid files never do -----------------------------------------


CUT_SOURCES = {
    "mp4": lambda d: clip(d / "whole.mp4", frames=60, noise_seed=2),
    "mp4-faststart": lambda d: faststart(clip(d / "plain.mp4", frames=60, noise_seed=2), d / "whole.mp4"),
    "mkv": lambda d: clip(d / "whole.mkv", frames=60, noise_seed=2, time_base=Fraction(1, 1000)),
    "webm": lambda d: clip(d / "whole.webm", frames=60, noise_seed=2, codec="libvpx-vp9"),
    "avi": lambda d: clip(d / "whole.avi", frames=60, noise_seed=2),
    "mov": lambda d: clip(d / "whole.mov", frames=60, noise_seed=2),
}


@pytest.mark.parametrize("source", CUT_SOURCES)
def test_a_cut_file_is_never_ok_with_frames_missing(tmp_path, source):
    """Cut anywhere: failed as truncated, or (a cut that spared every frame, only an index after
    them) ok with every frame. Never ok with fewer frames than the whole file has."""
    whole = CUT_SOURCES[source](tmp_path)
    assert probe(whole).frames == 60
    folder = tmp_path / "cuts"
    folder.mkdir()
    fractions = [0.1, 0.3, 0.5, 0.6, 0.8, 0.9, 0.97, 0.995]
    for f in fractions:
        cut(whole, folder / f"cut{f}{whole.suffix}", f)
    out = tmp_path / "traces.arrow"
    summary = score_run([folder], out, ScoreOptions(model="none"))
    for row in summary.rows:
        if row.status == "ok":
            assert row.frames == 60, row
            assert_complete(out, row.video, 60)
        else:
            assert re.search(r"truncated", row.error), row
    # A cut that takes frames away always fails; only one near the very end may spare them all.
    for row in summary.rows:
        if float(row.video[3:].rsplit(".", 1)[0]) <= 0.9:
            assert row.status == "failed", row


def test_truncation_errors_name_the_missing_part(tmp_path):
    whole = clip(tmp_path / "whole.mkv", frames=60, noise_seed=2, time_base=Fraction(1, 1000))
    with pytest.raises(TruncatedVideo, match=r"truncated: its \d+ readable frames stop at [\d.]+ s of the 2.00 s"):
        probe(cut(whole, tmp_path / "cut.mkv", 0.5))
    layout = container_layout(tmp_path / "cut.mkv")
    assert layout.kind == "Matroska" and layout.truncated and layout.declared == whole.stat().st_size
    mp4 = faststart(clip(tmp_path / "plain.mp4", frames=60, noise_seed=2), tmp_path / "fs.mp4")
    with pytest.raises(TruncatedVideo, match=r"truncated: \d+ of the 60 frames its header lists are readable"):
        probe(cut(mp4, tmp_path / "cut.mp4", 0.5))


def _top_level_boxes(path: Path) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of an MP4's top-level boxes, read independently of the code under test."""
    data, pos, boxes = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        boxes.append((data[pos + 4 : pos + 8], pos, pos + size))
        pos += size
    return boxes


def test_faststart_cut_right_after_its_index(tmp_path):
    """A faststart MP4 cut anywhere from the end of its 'moov' index to a few bytes into its
    frames' data: the boxes look complete (the cut falls before or inside the next box's
    header), but the index places every frame past the end of the file: truncated, saying so."""
    whole = faststart(clip(tmp_path / "plain.mp4", frames=60, noise_seed=2), tmp_path / "whole.mp4")
    boxes = _top_level_boxes(whole)
    moov_end = next(end for kind, _, end in boxes if kind == b"moov")
    mdat_start = next(start for kind, start, _ in boxes if kind == b"mdat")
    data = whole.read_bytes()
    for length in range(moov_end, mdat_start + 17):
        cut_file = tmp_path / "cut.mp4"
        cut_file.write_bytes(data[:length])
        with pytest.raises(TruncatedVideo) as caught:
            probe(cut_file)
        reason = str(caught.value)
        assert "truncated" in reason and "\n" not in reason, (length, reason)
        assert re.search(r"the data of (59|60) of the 60 frames its index lists is cut off", reason), (length, reason)


def _has_b_frames(path: Path) -> bool:
    with av.open(str(path)) as container:
        return any(p.pts != p.dts for p in container.demux(container.streams.video[0]) if p.size)


VALID_RATES = [Fraction(24000, 1001), 25, 30, 60]


def test_no_false_truncation_on_valid_files(tmp_path):
    """Valid files of every container, several rates, with and without B-frames, an MP4 and an
    MKV whose audio outlasts the video, an AVI with dropped frames, and files with trailing
    bytes: all ok, every frame."""
    folder = tmp_path / "videos"
    folder.mkdir()
    expected: dict[str, int] = {}
    for ext in ("mp4", "mkv", "avi", "mov", "webm"):
        for rate in VALID_RATES:
            variants = {"vp9": {"codec": "libvpx-vp9"}} if ext == "webm" else {"b": {}, "nob": {"options": {"bf": "0"}}}
            for label, options in variants.items():
                time_base = Fraction(1, 1000) if ext in ("mkv", "webm") else None
                path = clip(
                    folder / f"r{float(rate):.2f}-{label}.{ext}", frames=31, fps=rate, time_base=time_base, **options
                )
                if ext in ("mp4", "mkv", "mov"):  # (AVI has no pts: FFmpeg makes them up)
                    assert _has_b_frames(path) == (label == "b"), path.name
                expected[path.name] = 31
    faststart(clip(tmp_path / "plain.mp4", frames=31), folder / "faststart.mp4")
    expected["faststart.mp4"] = 31
    clip_with_long_audio(folder / "long-audio.mp4")
    clip_with_long_audio(folder / "long-audio.mkv")
    with av.open(str(folder / "long-audio.mp4")) as container:
        assert container.duration / 1e6 > 2.5  # the file lasts as long as its audio
    expected["long-audio.mp4"] = expected["long-audio.mkv"] = GOOD_FRAMES
    dropped = avi_with_dropped_frames(folder / "dropped.avi")
    with av.open(str(dropped)) as container:
        assert container.streams.video[0].frames == 30  # the header counts the 2 empty ones
    expected["dropped.avi"] = 28
    # Bytes after the end: junk, and (MP4) a box that announces more than is left, as when
    # only trailing padding was lost. Every frame is there: these are ok.
    for ext, junk in [("mp4", b"\xff\x00junk" + bytes(range(256))), ("mkv", bytes(range(256)))]:
        path = clip(folder / f"trailing.{ext}", frames=31)
        with open(path, "ab") as f:
            f.write(junk)
        expected[path.name] = 31
    path = clip(folder / "trailing-box.mp4", frames=31)
    with open(path, "ab") as f:
        f.write((1 << 20).to_bytes(4, "big") + b"free" + bytes(100))
    assert container_layout(path).truncated
    expected[path.name] = 31

    for name in expected:
        info = probe(folder / name)
        assert info.frames == expected[name], name
        assert not container_layout(folder / name).truncated or name.startswith("trailing"), name

    out = tmp_path / "traces.arrow"
    summary = score_run([folder], out, ScoreOptions(model="none", fps="native"))
    rows = {r.video: r for r in summary.rows}
    assert {name: r.status for name, r in rows.items()} == dict.fromkeys(expected, "ok")
    traces = read(out)
    for name, frames in expected.items():
        mine = traces.filter(pc.equal(traces["video"], name))
        assert mine["frame"].to_pylist() == list(range(frames)) == mine["source_frame"].to_pylist(), name
        assert rows[name].frames == frames


# -- unreadable, vanishing, corrupt ------------------------------------------------------------------


SETPRIV = shutil.which("setpriv")


def _kernel_denies_reading(path: Path) -> list[str] | None:
    """A command prefix under which the kernel refuses to read ``path`` (mode 000): nothing for
    a user, for root ``setpriv`` without the capabilities that let root read any file
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH; root still reaches its own folders as their owner).
    None where that cannot be had (no setpriv, or not permitted in this container)."""
    if os.geteuid() != 0:
        return []
    if SETPRIV is None:
        return None
    prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search"]
    check = subprocess.run([*prefix, "head", "-c", "1", str(path)], capture_output=True, text=True)
    return prefix if check.returncode != 0 and "Permission denied" in check.stderr else None


@pytest.mark.parametrize("given", ["folder", "files"])
def test_unreadable_file(tmp_path, given):
    """A file the user may not read fails alone as "permission denied", whether found in a
    folder or named on the command line (not a usage error that stops the run). The denial is
    the kernel's: the CLI runs as a process that really cannot read the file."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "c.mp4"):
        clip(folder / name)
    bad = clip(folder / "b.mp4")
    bad.chmod(0o000)
    prefix = _kernel_denies_reading(bad)
    if prefix is None:
        pytest.skip(
            "NOT TESTED: running as root, and root's right to read any file cannot be dropped here "
            "(setpriv missing, or CAP_SETPCAP not granted): the permission denial is not exercised"
        )
    out = tmp_path / "traces.arrow"
    inputs = [str(folder)] if given == "folder" else [str(folder / n) for n in ("a.mp4", "b.mp4", "c.mp4")]
    command = [*prefix, sys.executable, "-m", "affbatch", "score", "--model", "none", *inputs, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    names = ["a.mp4", "b.mp4", "c.mp4"] if given == "folder" else inputs
    rows = manifest(out)
    assert list(rows) == names
    assert rows[names[1]]["status"] == "failed"
    assert rows[names[1]]["error"] == "permission denied"
    assert f"failed: {names[1]}: permission denied" in done.stderr
    assert_complete(out, names[0])
    assert_complete(out, names[2])


class _Deleter(Progress):
    """Deletes a video of the run when another one is done."""

    def __init__(self, after: str, victim: Path) -> None:
        self.after, self.victim, self.done = after, victim, []

    def video_done(self, name, status, frames, seconds, error) -> None:
        self.done.append((name, status, error))
        if name == self.after:
            self.victim.unlink()


def test_file_vanishing_mid_run(tmp_path):
    """A video deleted while the run goes on fails with 'file not found'; the others are ok.

    Decoding runs ahead of the analysis by at most about one video (a queue of two events), so
    when video 0 is done, video 1 may already be read: the video deleted is video 2, which
    nothing has opened yet. (Deleting an opened file does not stop its reading on POSIX.)
    """
    folder = tmp_path / "videos"
    folder.mkdir()
    paths = [clip(folder / f"v{i}.mp4") for i in range(5)]
    out = tmp_path / "traces.arrow"
    progress = _Deleter("v0.mp4", paths[2])
    summary = score_run([folder], out, ScoreOptions(model="none", batch_size=8), progress=progress)
    rows = {r.video: r for r in summary.rows}
    assert rows["v2.mp4"].status == "failed"
    assert "file not found" in rows["v2.mp4"].error
    for name in ("v0.mp4", "v1.mp4", "v3.mp4", "v4.mp4"):
        assert_complete(out, name)
    assert [d[0] for d in progress.done] == [f"v{i}.mp4" for i in range(5)]


def test_next_file_vanishing_is_read_whole_or_not_found(tmp_path):
    """Deleting the very next video races with decoding, which may have opened it: then it is
    scored completely; otherwise it fails as not found. Never anything in between."""
    folder = tmp_path / "videos"
    folder.mkdir()
    paths = [clip(folder / f"v{i}.mp4") for i in range(3)]
    out = tmp_path / "traces.arrow"
    summary = score_run([folder], out, ScoreOptions(model="none", batch_size=8), progress=_Deleter("v0.mp4", paths[1]))
    row = {r.video: r for r in summary.rows}["v1.mp4"]
    if row.status == "ok":
        assert_complete(out, "v1.mp4")
    else:
        assert "file not found" in row.error
    assert_complete(out, "v0.mp4")
    assert_complete(out, "v2.mp4")


#: The two ways a damaged file fails; each names how many frames are lost.
CORRUPT_REASON = re.compile(
    r"corrupt data: its \d+ readable frames stop at [\d.]+ s of the [\d.]+ s its header announces, "
    r"about \d+ frames missing \(the file is complete: its data is damaged\)"
    r"|\d+ of its \d+ readable frames could not be decoded \(first: frame \d+\).*"
)


@pytest.mark.parametrize(
    ("width", "height", "where", "length"),
    [(64, 48, 0.5, 1000), (160, 120, 0.5, 1000), (160, 120, 0.33, 200), (160, 120, 0.7, 4000)],
)
def test_corrupt_middle_of_h264_mkv(tmp_path, width, height, where, length):
    """Garbage over the middle of an H.264 Matroska file. What it hits decides the outcome:

    * Matroska's structure, and the demuxer stops there (a small file, one cluster): failed,
      "corrupt data: its N readable frames stop at X s of the Y s its header announces, about
      M frames missing (the file is complete: its data is damaged)";
    * Matroska's structure, and the demuxer finds the next block again: the frames in between
      are gone, for ffmpeg as for us (its ``fps=30`` shows the last frame before the gap
      there, and so do we); then, as below, by what the rest of the garbage hit;
    * a frame's data, so that it cannot be decoded: failed, "N of M frames could not be decoded
      (first: frame k)";
    * data the decoder conceals (every frame decoded, some with artefacts): ok.

    Which one happens with multi-threaded decoding can vary from run to run. Whatever happens,
    a video that is ok has a row for every output frame of the file's whole duration.
    """
    whole = clip(tmp_path / "src.mkv", frames=60, width=width, height=height, noise_seed=1, time_base=Fraction(1, 1000))
    folder = tmp_path / "videos"
    folder.mkdir()
    corrupt = garbage_over(whole, folder / "corrupt.mkv", int(whole.stat().st_size * where), length)
    clip(folder / "ok.mp4")
    out = tmp_path / "traces.arrow"
    result = score_cli(str(folder), "--out", str(out))
    assert "Traceback" not in result.output
    row = manifest(out)["corrupt.mkv"]
    if row["status"] == "ok":
        assert result.exit_code == 0, result.output
        assert row["frames"] == 60
        traces = read(out)
        mine = traces.filter(pc.equal(traces["video"], "corrupt.mkv"))
        assert mine["frame"].to_pylist() == list(range(60))
        shown = np.asarray(mine["source_frame"].to_pylist())
        assert shown[0] == 0 and np.all(np.diff(shown) >= 0) and shown[-1] == probe(corrupt).frames - 1
    else:
        assert result.exit_code == 1, result.output
        assert CORRUPT_REASON.fullmatch(row["error"]), row["error"]
    assert_complete(out, "ok.mp4")


def test_corrupt_frame_data_in_h264_mkv(tmp_path):
    """Garbage inside one frame's data, the container intact: that frame cannot be decoded (the
    frames that refer to it are concealed by the decoder) and the video fails, saying how many
    frames could not be decoded and which is the first."""
    whole = clip(tmp_path / "src.mkv", frames=60, width=160, height=120, noise_seed=1, time_base=Fraction(1, 1000))
    with av.open(str(whole)) as container:
        packets = [(p.pos, p.size, p.pts) for p in container.demux(container.streams.video[0]) if p.size]
    pos, size, _ = packets[20]  # a frame in the middle
    folder = tmp_path / "videos"
    folder.mkdir()
    garbage_over(whole, folder / "corrupt.mkv", pos + size // 4, size // 2, seed=20)
    clip(folder / "ok.mp4")
    out = tmp_path / "traces.arrow"
    result = score_cli(str(folder), "--out", str(out))
    assert result.exit_code == 1, result.output
    row = manifest(out)["corrupt.mkv"]
    assert row["status"] == "failed"
    assert CORRUPT_REASON.fullmatch(row["error"]), row["error"]
    assert re.match(r"\d+ of its 60 readable frames could not be decoded", row["error"]), row["error"]
    assert_complete(out, "ok.mp4")


def test_layout_of_unknown_formats_is_unknown(tmp_path):
    ts = clip(tmp_path / "c.ts", time_base=Fraction(1, 90000))
    layout = container_layout(ts)
    assert layout.kind is None and not layout.truncated and not layout.complete
    assert container_layout(tmp_path / "missing.mkv").kind is None
    with pytest.raises(VideoError, match="empty"):
        (tmp_path / "e.mkv").write_bytes(b"")
        probe(tmp_path / "e.mkv")
