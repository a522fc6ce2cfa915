"""``--workers N``: worker processes give the traces one process gives, and a crash of a worker,
of the parent, or a Ctrl-C loses at most the videos in flight; every video ends up in OUT and
its manifest exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

from affbatch.pipeline import ScoreOptions
from affbatch.run import Progress, score_run
from affbatch.scale.local import cpu_shares, describe_exit
from affbatch.scale.order import longest_first
from affbatch.video.inputs import collect_videos
from tests.scale.crash import (
    alive,
    check_once,
    children,
    folder_of_clips,
    reading,
    score_process,
    summary_of,
    wait_until,
)
from tests.support.arrow import read

NO_MODEL = ScoreOptions(model="none")
LENGTHS = {"a.mp4": 60, "b.mp4": 240, "c.mp4": 30, "d.mp4": 120, "long.mp4": 600, "e.mp4": 90}


class Recorder(Progress):
    """What a run tells: assignments (video -> worker pids) and notes."""

    def __init__(self) -> None:
        self.assigned: dict[str, list[int]] = {}
        self.notes: list[str] = []
        self.frames = 0

    def video_assigned(self, name: str, worker: int) -> None:
        self.assigned.setdefault(name, []).append(worker)

    def frames_done(self, frames: int, fraction: float) -> None:
        self.frames += frames

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_longest_first_by_header_duration(tmp_path):
    folder_of_clips(tmp_path / "v", LENGTHS)
    ordered = [v.name for v in longest_first(collect_videos([tmp_path / "v"]))]
    assert ordered == ["long.mp4", "b.mp4", "d.mp4", "e.mp4", "a.mp4", "c.mp4"]
    (tmp_path / "v" / "junk.mp4").write_bytes(b"not a video")  # unknown length: last
    assert [v.name for v in longest_first(collect_videos([tmp_path / "v"]))][-1] == "junk.mp4"


def test_cpu_shares_and_exit_reasons():
    assert cpu_shares(2, [0, 1]) == [(0,), (1,)]
    assert cpu_shares(2, [0, 1, 2, 3, 4]) == [(0, 1), (2, 3, 4)]
    assert cpu_shares(3, [0, 1]) == [(0,), (1,), (0,)]
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(3) == "exit status 3"


def test_two_workers_give_the_traces_of_one(tmp_path):
    """With the embedded model on a real face clip: OUT and the manifest (but for timings) match."""
    from tests.support.face_media import carphone

    folder = tmp_path / "v"
    folder.mkdir()
    for name in ("p.mp4", "q.mp4", "r.mp4"):
        shutil.copy(carphone(), folder / name)
    folder_of_clips(folder, {"blank.mp4": 45})
    options = ScoreOptions(model="prior")
    one = score_run([folder], tmp_path / "one.arrow", options, workers=1)
    recorder = Recorder()
    two = score_run([folder], tmp_path / "two.arrow", options, workers=2, progress=recorder)
    assert len({pid for pids in recorder.assigned.values() for pid in pids}) == 2
    assert recorder.frames == 3 * 120 + 45  # the workers' frames reach the parent's progress
    a, b = read(tmp_path / "one.arrow"), read(tmp_path / "two.arrow")
    assert a.num_rows > 0 and a["valence"].null_count < a.num_rows  # faces were scored
    assert a.equals(b) and a.schema.metadata == b.schema.metadata
    strip = ("seconds",)
    assert [{k: v for k, v in vars(r).items() if k not in strip} for r in one.rows] == [
        {k: v for k, v in vars(r).items() if k not in strip} for r in two.rows
    ]


def kill_while_reading(pid: int, name: str, limit_s: float = 60.0) -> None:
    """SIGKILL ``pid`` as soon as it has the file ``name`` open (decoding it)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and alive(pid):
        if reading(pid, name):
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.001)


def test_a_worker_killed_mid_video_costs_only_that_video(tmp_path):
    expected = folder_of_clips(tmp_path / "v", LENGTHS)
    killed = []

    class Killer(Recorder):
        def video_assigned(self, name: str, worker: int) -> None:
            super().video_assigned(name, worker)
            if name == "long.mp4" and not killed:  # the first attempt only, once it reads the file
                killed.append(worker)
                threading.Thread(target=kill_while_reading, args=(worker, name), daemon=True).start()

    recorder = Killer()
    summary = score_run([tmp_path / "v"], tmp_path / "t.arrow", NO_MODEL, workers=2, progress=recorder)
    assert not summary.failed
    rows = check_once(tmp_path / "t.arrow", expected)
    assert all(r["status"] == "ok" for r in rows)
    assert len(recorder.assigned["long.mp4"]) == 2 and recorder.assigned["long.mp4"][1] != killed[0]
    assert all(len(p) == 1 for n, p in recorder.assigned.items() if n != "long.mp4")
    assert any(f"worker {killed[0]} died (killed by SIGKILL) while scoring long.mp4" in n for n in recorder.notes)
    print(f"\nworker SIGKILL: manifest {len(rows)} rows for {len(expected)} videos, all ok; long.mp4 sent twice")


def test_a_video_that_kills_its_worker_twice_is_recorded_failed(tmp_path):
    expected = folder_of_clips(tmp_path / "v", {"ok1.mp4": 60, "poison.mp4": 300, "ok2.mp4": 30})

    class Poison(Recorder):
        def video_assigned(self, name: str, worker: int) -> None:
            super().video_assigned(name, worker)
            if name == "poison.mp4":
                os.kill(worker, signal.SIGKILL)

    recorder = Poison()
    summary = score_run([tmp_path / "v"], tmp_path / "t.arrow", NO_MODEL, workers=2, progress=recorder)
    rows = check_once(tmp_path / "t.arrow", expected)
    poison = next(r for r in rows if r["video"] == "poison.mp4")
    assert poison["status"] == "failed"
    assert poison["error"] == "its worker died on each of 2 attempts (last: killed by SIGKILL)"
    assert [r.video for r in summary.failed] == ["poison.mp4"]
    assert len(recorder.assigned["poison.mp4"]) == 2
    assert sum(r["status"] == "ok" for r in rows) == 2
    print(f"\nvideo killing its worker twice: manifest {len(rows)} rows, 2 ok, poison.mp4 failed: {poison['error']}")


def _kill_parent_after(tmp_path, sig: int, commits: int, *extra: str):
    """Start a 2-worker CLI run on 8 clips; send ``sig`` to the parent (SIGINT: to the job's
    process group, as a terminal's Ctrl-C) once ``commits`` videos are committed."""
    names = {f"v{i}.mp4": 240 for i in range(8)}
    folder_of_clips(tmp_path / "v", names)
    out = tmp_path / "t.arrow"
    parts = tmp_path / "t.arrow.parts"
    process = score_process(str(tmp_path / "v"), "--out", str(out), "--workers", "2", *extra)
    try:
        wait_until(lambda: len(list(parts.glob("*.json"))) >= commits or process.poll() is not None, 120, "commits")
        assert process.poll() is None, process.communicate()
        workers = children(process.pid, named="spawn_main")  # not multiprocessing's resource tracker
        assert len(workers) == 2
        if sig == signal.SIGINT:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # No worker outlives its parent.
    wait_until(lambda: not any(alive(w) for w in workers), 10, "the workers to exit")
    committed = len(list(parts.glob("*.json")))
    assert commits <= committed < 8
    assert not out.exists()
    return names, out, committed, process.returncode, stderr


def test_parent_killed_then_resume_scores_nothing_twice(tmp_path):
    names, out, committed, status, _ = _kill_parent_after(tmp_path, signal.SIGKILL, 2)
    assert status == -signal.SIGKILL
    process = score_process(str(tmp_path / "v"), "--out", str(out), "--workers", "2", "--resume", "--json")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    summary = summary_of(stdout)
    assert summary["reused"] == committed and summary["ok"] == 8
    assert stderr.count(": ok, 240 frames") == 8 - committed  # the rest scored once each
    rows = check_once(out, names)
    print(
        f"\nparent SIGKILL after {committed}/8 committed; --resume reused {committed}, scored {8 - committed}; "
        f"manifest {len(rows)} rows, each once"
    )


def test_ctrl_c_stops_every_worker_and_says_how_to_resume(tmp_path):
    names, out, committed, status, stderr = _kill_parent_after(tmp_path, signal.SIGINT, 1)
    assert status == 130
    assert f"rerun with --resume to complete {out}" in stderr
    assert "Traceback" not in stderr
    process = score_process(str(tmp_path / "v"), "--out", str(out), "--resume", "--json")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert summary_of(stdout)["reused"] == committed
    check_once(out, names)


def test_workers_must_be_positive(tmp_path):
    folder_of_clips(tmp_path / "v", {"a.mp4": 30})
    process = score_process(str(tmp_path / "v"), "--out", str(tmp_path / "t.arrow"), "--workers", "0")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "--workers 0: must be at least 1" in stderr


def test_workers_that_cannot_start_are_one_line(tmp_path):
    folder_of_clips(tmp_path / "v", {"a.mp4": 30})
    process = score_process(
        str(tmp_path / "v"), "--out", str(tmp_path / "t.arrow"), "--workers", "2", "--model", str(tmp_path / "nope")
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"affbatch: error: --model {tmp_path / 'nope'}: neither")
    assert not children(process.pid)
