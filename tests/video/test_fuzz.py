"""A fuzz pass over real small videos: a few hundred seeded mutants, scored by the CLI.

The mutants come from a seeded generator of our own, not from atheris. atheris is a
coverage-guided fuzzer for a Python function in-process: the invariants here are the command's
(its exit status, its stderr, a hang), which need a process and a timeout per batch; the
mutations that matter for videos are structural (packets dropped or duplicated, timestamps
rewritten: files a muxer writes validly, which random bytes almost never are); and CI needs the
same cases on every run, a fixed count in a fixed time, where a coverage-guided search drifts
with the machine. Bytes are mutated too (flips, cuts, duplicated and deleted ranges). Each
case's name says how it was made (seed, source, mutation), so a failure can be replayed.

Invariants, for every mutant:

* the run ends (no hang: each batch of files has a time limit of a few seconds a file, and each
  video's own time is checked);
* exit status 0 or 1; no traceback, no "internal error";
* every failure is one line naming the file (``failed: NAME: reason``) and a manifest row with
  a one-line reason;
* a valid video (an unmutated source, or a packet mutant with its bitstream whole, that
  ffmpeg decodes without a word at ``-v error``) keeps its ffmpeg frame count: scored ok with
  as many frames as ``ffmpeg -vf fps=30`` outputs; and whatever scores ok has ffmpeg's count
  when ffmpeg decodes it cleanly.

Run: ``AFFBATCH_REQUIRE_FFMPEG=1 python -m pytest -q -m slow tests/video/test_fuzz.py``;
``AFFBATCH_FUZZ_CASES`` (default 300) and ``AFFBATCH_FUZZ_SEED`` (default 15) change the pass.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from fractions import Fraction as F
from pathlib import Path

import av
import pytest

from tests.support.arrow import read
from tests.support.coded_clips import constant_rate_pts, write_coded_clip

CASES = int(os.environ.get("AFFBATCH_FUZZ_CASES", "300"))
SEED = int(os.environ.get("AFFBATCH_FUZZ_SEED", "15"))
BATCH = 30
#: Seconds a file may take (a 64x48 clip of 40 frames takes well under one).
PER_FILE_S = 10

SOURCES = {
    # name: (extension, write_coded_clip options)
    "mp4-h264-b": (".mp4", {"options": {"bf": "2"}}),
    "mp4-h264-audio": (".mp4", {"audio": (0.0, 1.4)}),
    "mkv-h264": (".mkv", {"time_base": F(1, 1000)}),
    "webm-vp9": (".webm", {"codec": "libvpx-vp9", "time_base": F(1, 1000)}),
    "avi-mpeg4": (".avi", {"codec": "mpeg4"}),
    "ts-h264": (".ts", {"time_base": F(1, 90000)}),
    "mov-mjpeg": (".mov", {"codec": "mjpeg", "pix_fmt": "yuvj420p"}),
}


def make_sources(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    out = {}
    for name, (ext, options) in SOURCES.items():
        options = dict(options)
        time_base = options.pop("time_base", F(1, 30))
        pts = constant_rate_pts(40, F(30), time_base)
        out[name] = write_coded_clip(folder / f"{name}{ext}", pts, time_base, rate=F(30), noise_seed=1, **options)
    return out


# -- mutations: bytes ----------------------------------------------------------------------------


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 2, 5, 20])):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def cut(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, len(data))]


def duplicate_range(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    length = rng.randrange(1, min(4096, len(data) - start) + 1)
    return data[: start + length] + data[start : start + length] + data[start + length :]


def delete_range(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randrange(1, 2048) :]


def zero_range(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    length = rng.randrange(1, 512)
    return data[:start] + bytes(min(length, len(data) - start)) + data[start + length :]


BYTE_MUTATIONS = {f.__name__: f for f in (flip_bytes, cut, duplicate_range, delete_range, zero_range)}


# -- mutations: packets (remuxed, so that the container is valid) --------------------------------


def remux(src: Path, dst: Path, edit, rng: random.Random) -> bool:
    """Copy ``src``'s packets into ``dst`` (same format) through ``edit(packets, rng) -> packets``;
    False when the muxer refuses the result (timestamps it cannot store)."""
    try:
        with av.open(str(src)) as source:
            packets = [p for p in source.demux() if p.size]
            with av.open(str(dst), "w", format=source.format.name.split(",")[0]) as target:
                streams = {s.index: target.add_stream_from_template(s) for s in source.streams}
                for packet in edit(packets, rng):
                    packet.stream = streams[packet.stream_index]
                    target.mux(packet)
        return True
    except (av.error.FFmpegError, ValueError):
        return False


def _video(packets):
    return [p for p in packets if p.stream.type == "video"]


def drop_packets(packets, rng):
    victims = set(rng.sample(range(len(packets)), max(1, len(packets) // rng.choice([5, 10, 20]))))
    return [p for i, p in enumerate(packets) if i not in victims]


def duplicate_packets(packets, rng):
    out = []
    for p in packets:
        out.append(p)
        if p.stream.type == "video" and rng.random() < 0.15:
            twin = av.Packet(bytes(p))
            twin.pts, twin.dts, twin.time_base = p.pts, p.dts, p.time_base
            twin.stream = p.stream
            out.append(twin)
    return out


def jitter_timestamps(packets, rng):
    for p in _video(packets):
        step = round(0.01 / p.time_base) or 1
        shift = rng.randint(-step, step)
        if p.pts is not None:
            p.pts += shift
        if p.dts is not None:
            p.dts += shift
    return packets


def jump_timestamps(packets, rng):
    """The clock jumps at a keyframe: every frame shown from there on is later (by display
    time, as a real clock jump; shifting by file order would put B-frames out of their display
    order, which no clock does)."""
    video = _video(packets)
    keys = [p.pts for p in video[1:] if p.is_keyframe and p.pts is not None] or [video[len(video) // 2].pts]
    at = rng.choice(keys)
    jump = rng.choice([0.5, 3, 12, 700, 4000])
    for p in video:
        if p.pts is not None and p.pts >= at:
            delta = round(jump / p.time_base)
            p.pts += delta
            p.dts = None if p.dts is None else p.dts + delta
    return packets


def scale_timestamps(packets, rng):
    factor = rng.choice([F(1, 2), F(2), F(1001, 1000), F(5, 3)])
    for p in _video(packets):
        p.pts = None if p.pts is None else int(p.pts * factor)
        p.dts = None if p.dts is None else int(p.dts * factor)
    return packets


PACKET_MUTATIONS = {f.__name__: f for f in (drop_packets, duplicate_packets, jitter_timestamps, jump_timestamps,
                                            scale_timestamps)}


def make_cases(sources: dict[str, Path], folder: Path, count: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    folder.mkdir()
    cases = []
    names = sorted(sources)
    for i in range(count):
        source = names[i % len(names)]
        src = sources[source]
        if rng.random() < 0.5:
            mutation = rng.choice(sorted(BYTE_MUTATIONS))
            path = folder / f"case{i:03d}-{source}-{mutation}{src.suffix}"
            path.write_bytes(BYTE_MUTATIONS[mutation](src.read_bytes(), random.Random(f"{seed}-{i}")))
        else:
            mutation = rng.choice(sorted(PACKET_MUTATIONS))
            path = folder / f"case{i:03d}-{source}-{mutation}{src.suffix}"
            if not remux(src, path, PACKET_MUTATIONS[mutation], random.Random(f"{seed}-{i}")):
                path.unlink(missing_ok=True)
                continue
        cases.append(path)
    return cases


# -- the oracle and the run ----------------------------------------------------------------------


def ffmpeg_count(path: Path) -> tuple[bool, int | None]:
    """(ffmpeg decodes it without a word at -v error, its fps=30 frame count)."""
    try:
        done = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-an", "-vf", "fps=30",
             "-fps_mode", "passthrough", "-f", "null", "-", "-progress", "pipe:1"],
            capture_output=True, text=True, timeout=60,
        )
    except subprocess.TimeoutExpired:
        return False, None
    frames = re.findall(r"^frame=(\d+)$", done.stdout, re.M)
    clean = done.returncode == 0 and not done.stderr.strip()
    return clean, int(frames[-1]) if frames else None


def score_batch(files: list[Path], out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "affbatch", "score", "--model", "none", *map(str, files), "--out", str(out)],
        capture_output=True, text=True, timeout=PER_FILE_S * len(files) + 60,
    )


@pytest.mark.slow
def test_fuzz_invariants(ffmpeg, tmp_path):
    sources = make_sources(tmp_path / "sources")
    cases = make_cases(sources, tmp_path / "cases", CASES, SEED)
    assert len(cases) >= 0.8 * CASES  # the muxer refuses few packet mutants
    problems: list[str] = []
    counts = {"ok": 0, "failed": 0, "valid": 0}
    for start in range(0, len(cases), BATCH):
        files = cases[start : start + BATCH]
        out = tmp_path / f"batch{start}.arrow"
        try:
            done = score_batch([*sources.values(), *files] if start == 0 else files, out)
        except subprocess.TimeoutExpired:
            problems.append(f"batch {start}: no result within {PER_FILE_S} s a file (a hang)")
            continue
        if done.returncode not in (0, 1):
            problems.append(f"batch {start}: exit status {done.returncode}: {done.stderr[-500:]}")
        if "Traceback" in done.stderr + done.stdout or "internal error" in done.stderr:
            problems.append(f"batch {start}: {done.stderr[-1500:]}")
        if not out.exists():
            problems.append(f"batch {start}: no traces written: {done.stderr[-500:]}")
            continue
        rows = {r["video"]: r for r in read(out.with_name(out.stem + ".videos.arrow")).to_pylist()}
        for path in files if start else [*sources.values(), *files]:
            row = rows.get(str(path))
            if row is None:
                problems.append(f"{path.name}: no manifest row")
                continue
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            if row["seconds"] is not None and row["seconds"] > PER_FILE_S:
                problems.append(f"{path.name}: took {row['seconds']:.1f} s")
            if row["status"] != "ok":
                error = row["error"] or ""
                if not error or "\n" in error:
                    problems.append(f"{path.name}: reason not one line: {error!r}")
                if f"failed: {path}: {error}" not in done.stderr:
                    problems.append(f"{path.name}: no 'failed: NAME: reason' line on stderr")
            clean, count = ffmpeg_count(path)
            is_source = path in sources.values()
            valid = clean and bool(count) and (is_source or _remuxed(path))
            if valid:
                counts["valid"] += 1
                if row["status"] != "ok" or row["frames"] != count:
                    problems.append(f"{path.name}: valid, ffmpeg outputs {count} frames; we: {row['status']} "
                                    f"{row['frames']} {row['error'] or ''}")
            elif row["status"] == "ok" and clean and count is not None and row["frames"] != count:
                problems.append(f"{path.name}: ok with {row['frames']} frames, ffmpeg outputs {count}")
    print(f"fuzz: {len(cases)} cases (seed {SEED}) + {len(sources)} sources: {counts}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


def _remuxed(path: Path) -> bool:
    """Made by a packet mutation that leaves a valid video: a file the muxer wrote, its
    bitstream whole. Dropping packets of an inter-coded stream removes reference frames (a
    damaged video, decoded with concealment that frame threads make vary from run to run), so
    only dropping MJPEG's independent pictures counts."""
    if "drop_packets" in path.stem:
        return "mjpeg" in path.stem
    return any(name in path.stem for name in PACKET_MUTATIONS)
