"""``--resume``: a run reuses what an earlier run with the same OUT and settings finished, and
nothing else; OUT is only ever replaced whole; a killed run loses at most the videos in flight.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

import affbatch.output.runstore
from affbatch.cli import app
from affbatch.cli.progress import Progress
from affbatch.destination import OutputFailure
from affbatch.pipeline import ScoreOptions
from affbatch.run import score_run
from tests.support.arrow import manifest_path, read
from tests.support.coded_clips import constant_rate_pts, write_coded_clip

runner = CliRunner()


def clip(path: Path, frames: int = 30, fps: int = 30, **options) -> Path:
    time_base = Fraction(1, fps)
    return write_coded_clip(path, constant_rate_pts(frames, Fraction(fps), time_base), time_base, rate=fps, **options)


def run(*args: str) -> tuple[int, dict, str]:
    """``affbatch score ARGS --json``: (exit status, JSON summary, all output)."""
    result = runner.invoke(app, ["score", "--model", "none", *args, "--json"])
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :]) if "{" in result.stdout else {}
    return result.exit_code, summary, result.output


def check_out(out: Path, expected: dict[str, int]) -> None:
    """OUT holds every video once, in input order, each with every output frame once; at 30 fps
    from 30 fps clips, output frame k shows source frame k."""
    traces = read(out)
    names = traces["video"].to_pylist()
    order = list(dict.fromkeys(names))
    assert order == list(expected)
    for name, frames in expected.items():
        mine = traces.filter(pc.equal(traces["video"], name))
        assert mine["frame"].to_pylist() == list(range(frames)), name
        assert mine["source_frame"].to_pylist() == list(range(frames)), name
    # Each video's rows are contiguous: no video appears twice.
    assert sum(1 for a, b in zip(names, names[1:], strict=False) if a != b) == len(expected) - 1
    rows = read(manifest_path(out)).to_pylist()
    assert [r["video"] for r in rows] == list(expected)
    assert all(r["status"] == "ok" and r["frames"] == expected[r["video"]] for r in rows)


@pytest.fixture
def videos(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    clip(folder / "a.mp4", 30)
    clip(folder / "b.mp4", 24)
    clip(folder / "c.mkv", 18)
    return folder


EXPECTED = {"a.mp4": 30, "b.mp4": 24, "c.mkv": 18}


def test_resume_after_a_finished_run_reuses_every_video(videos, tmp_path):
    out = tmp_path / "traces.arrow"
    status, summary, _ = run(str(videos), "--out", str(out))
    assert status == 0 and summary["reused"] == 0
    check_out(out, EXPECTED)
    first = read(out)

    status, summary, output = run(str(videos), "--out", str(out), "--resume")
    assert status == 0, output
    assert summary["reused"] == 3 and summary["ok"] == 3 and summary["frames"] == sum(EXPECTED.values())
    assert "(3 reused)" in output
    check_out(out, EXPECTED)
    assert read(out).equals(first)

    # Again: a resumed run's OUT is as good a base as the first one's.
    status, summary, _ = run(str(videos), "--out", str(out), "--resume")
    assert status == 0 and summary["reused"] == 3
    check_out(out, EXPECTED)


def test_resume_with_a_new_video_scores_only_that_one(videos, tmp_path):
    out = tmp_path / "traces.arrow"
    assert run(str(videos), "--out", str(out))[0] == 0
    clip(videos / "b2.mp4", 12)  # sorts between b.mp4 and c.mkv
    status, summary, output = run(str(videos), "--out", str(out), "--resume")
    assert status == 0, output
    assert summary["reused"] == 3
    assert "b2.mp4: ok" in output
    check_out(out, {"a.mp4": 30, "b.mp4": 24, "b2.mp4": 12, "c.mkv": 18})


def test_changed_content_is_recomputed_and_a_touched_file_is_not(videos, tmp_path):
    out = tmp_path / "traces.arrow"
    assert run(str(videos), "--out", str(out))[0] == 0

    clip(videos / "b.mp4", 21, noise_seed=5)  # new content, same name
    st = os.stat(videos / "c.mkv")
    os.utime(videos / "c.mkv", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same content

    status, summary, output = run(str(videos), "--out", str(out), "--resume")
    assert status == 0, output
    assert summary["reused"] == 2
    assert "a.mp4: already scored" in output and "c.mkv: already scored" in output
    assert "b.mp4: ok, 21 frames" in output
    check_out(out, {"a.mp4": 30, "b.mp4": 21, "c.mkv": 18})

    # The touched file is still recognised by content next time.
    status, summary, _ = run(str(videos), "--out", str(out), "--resume")
    assert status == 0 and summary["reused"] == 3


def test_changing_fps_recomputes_everything(videos, tmp_path):
    out = tmp_path / "traces.arrow"
    assert run(str(videos), "--out", str(out), "--fps", "30")[0] == 0
    status, summary, output = run(str(videos), "--out", str(out), "--fps", "native", "--resume")
    assert status == 0, output
    assert summary["reused"] == 0 and summary["fps"] == "native"
    assert "already scored" not in output
    check_out(out, EXPECTED)  # 30 fps clips: native and 30 fps select the same frames
    assert read(out).schema.metadata[b"fps"] == b"native"
    # And back: the 30 fps results were replaced, not kept beside the native ones.
    status, summary, _ = run(str(videos), "--out", str(out), "--fps", "30", "--resume")
    assert status == 0 and summary["reused"] == 0
    status, summary, _ = run(str(videos), "--out", str(out), "--fps", "30", "--resume")
    assert status == 0 and summary["reused"] == 3


def test_without_resume_old_results_are_discarded(videos, tmp_path):
    out = tmp_path / "traces.arrow"
    parts = tmp_path / "traces.arrow.parts"
    assert run(str(videos), "--out", str(out))[0] == 0
    (parts / "leftover.json").write_text("{}")
    status, summary, output = run(str(videos), "--out", str(out))
    assert status == 0, output
    assert summary["reused"] == 0 and "already scored" not in output
    assert not (parts / "leftover.json").exists()
    check_out(out, EXPECTED)


def test_failed_videos_are_retried(videos, tmp_path):
    out = tmp_path / "traces.arrow"
    (videos / "b.mp4").write_bytes(b"")
    status, summary, _ = run(str(videos), "--out", str(out))
    assert status == 1 and summary["failed"] == [{"video": "b.mp4", "error": "empty file (0 bytes)"}]

    # Still broken: tried again (not reused), fails again, the others are reused.
    status, summary, output = run(str(videos), "--out", str(out), "--resume")
    assert status == 1 and summary["reused"] == 2 and len(summary["failed"]) == 1
    assert "b.mp4: FAILED: empty file" in output

    clip(videos / "b.mp4", 24)  # repaired
    status, summary, output = run(str(videos), "--out", str(out), "--resume")
    assert status == 0, output
    assert summary["reused"] == 2 and summary["failed"] == []
    check_out(out, EXPECTED)


def test_a_deleted_or_replaced_out_is_not_trusted(videos, tmp_path):
    """After a finished run the results live in OUT; without it (or with another file in its
    place) --resume computes them again."""
    out = tmp_path / "traces.arrow"
    assert run(str(videos), "--out", str(out))[0] == 0
    out.unlink()
    status, summary, _ = run(str(videos), "--out", str(out), "--resume")
    assert status == 0 and summary["reused"] == 0
    check_out(out, EXPECTED)

    data = out.read_bytes()
    out.write_bytes(data)  # same bytes, a new file: not the one the records point into
    os.utime(out, ns=(time.time_ns(), time.time_ns() + 10**9))
    status, summary, _ = run(str(videos), "--out", str(out), "--resume")
    assert status == 0 and summary["reused"] == 0
    check_out(out, EXPECTED)


def _no_temporaries(folder: Path) -> None:
    names = [p.name for p in folder.rglob("*")]
    assert not [n for n in names if "tmp" in n], names


def test_out_is_written_atomically(videos, tmp_path, monkeypatch):
    out = tmp_path / "traces.arrow"
    assert run(str(videos), "--out", str(out))[0] == 0
    listing = {p.name for p in tmp_path.iterdir()}
    assert listing == {"videos", "traces.arrow", "traces.videos.arrow", "traces.arrow.parts", ".traces.arrow.lock"}
    # Once OUT is written, the parts folder keeps small records only: the traces are in OUT.
    assert sorted(p.suffix for p in (tmp_path / "traces.arrow.parts").iterdir()) == [".json"] * 3
    _no_temporaries(tmp_path)
    before = out.read_bytes(), manifest_path(out).read_bytes()

    # A run that breaks while writing OUT leaves the previous OUT and manifest as they were.
    clip(videos / "d.mp4", 10)
    real = affbatch.output.runstore._batches

    def broken(sources, counts):
        for i, batch in enumerate(real(sources, counts)):
            if i == 2:
                raise OSError(28, "No space left on device")
            yield batch

    monkeypatch.setattr(affbatch.output.runstore, "_batches", broken)
    with pytest.raises(OutputFailure, match="no space left on device: 4 finished videos are kept in .*--resume"):
        score_run([videos], out, ScoreOptions(model="none"), resume=True)
    assert (out.read_bytes(), manifest_path(out).read_bytes()) == before
    _no_temporaries(tmp_path)

    # Nothing was lost: the next run reuses all four videos.
    monkeypatch.setattr(affbatch.output.runstore, "_batches", real)
    status, summary, _ = run(str(videos), "--out", str(out), "--resume")
    assert status == 0 and summary["reused"] == 4
    check_out(out, {**EXPECTED, "d.mp4": 10})


def test_leftover_temporaries_of_a_killed_run_are_removed(videos, tmp_path):
    out = tmp_path / "traces.arrow"
    parts = tmp_path / "traces.arrow.parts"
    parts.mkdir()
    stale = [
        tmp_path / ".traces.arrow.4242.tmp",
        tmp_path / ".traces.videos.arrow.4242.tmp",
        parts / ".0123456789abcdef01234567.json.tmp",
        parts / ".0123456789abcdef01234567.arrow.4242.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half")
    keep = tmp_path / ".other.arrow.4242.tmp"  # another OUT's: not ours to remove
    keep.write_bytes(b"half")
    status, summary, _ = run(str(videos), "--out", str(out), "--resume")
    assert status == 0 and summary["reused"] == 0
    assert not any(p.exists() for p in stale)
    assert keep.exists()
    check_out(out, EXPECTED)


def test_sigkill_then_resume(tmp_path):
    """Kill -9 after two videos are committed: OUT is not written, and --resume reuses the
    committed videos and finishes the rest."""
    folder = tmp_path / "videos"
    folder.mkdir()
    first = clip(folder / "v0.mp4", 300, width=320, height=240, noise_seed=0, options={"preset": "ultrafast"})
    for i in range(1, 8):
        shutil.copy(first, folder / f"v{i}.mp4")
    out = tmp_path / "traces.arrow"
    parts = tmp_path / "traces.arrow.parts"

    process = subprocess.Popen(
        [sys.executable, "-m", "affbatch", "score", "--model", "none", str(folder), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(parts.glob("*.json"))) < 2:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no video committed in time"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    committed = len(list(parts.glob("*.json")))
    assert 2 <= committed < 8, committed
    assert not out.exists() and not manifest_path(out).exists()

    status, summary, output = run(str(folder), "--out", str(out), "--resume")
    assert status == 0, output
    assert summary["reused"] >= 2 and summary["reused"] == committed
    assert summary["ok"] == 8
    check_out(out, {f"v{i}.mp4": 300 for i in range(8)})
    _no_temporaries(tmp_path)


class _Paused(Progress):
    """Holds the run after its first video until released."""

    def __init__(self) -> None:
        self.paused = threading.Event()
        self.release = threading.Event()

    def video_done(self, name, status, frames, seconds, error) -> None:
        self.paused.set()
        assert self.release.wait(60)


def test_a_second_run_on_the_same_out_is_refused(videos, tmp_path):
    out = tmp_path / "traces.arrow"
    progress = _Paused()
    results: list = []

    def first_run() -> None:
        try:
            results.append(score_run([videos], out, ScoreOptions(model="none"), progress=progress))
        except BaseException as exc:  # handed to the test
            results.append(exc)

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        assert progress.paused.wait(60)
        for extra in ([], ["--resume"]):
            result = runner.invoke(app, ["score", "--model", "none", str(videos), "--out", str(out), *extra])
            assert result.exit_code == 2, result.output
            assert "another affbatch run is writing it" in result.output
            assert "Traceback" not in result.output
    finally:
        progress.release.set()
        thread.join(60)
    # The first run was not disturbed.
    assert len(results) == 1 and not isinstance(results[0], BaseException), results
    check_out(out, EXPECTED)
    # And once it is over, OUT is free again.
    assert run(str(videos), "--out", str(out), "--resume")[1]["reused"] == 3
