"""``--ray ADDRESS`` on a real local Ray cluster (``ray start --head`` on 127.0.0.1, 2 CPUs; see
conftest): actors give the traces one process gives; an actor's process killed mid-video is
restarted by Ray and its video scored again, every video once; the driver killed, ``--resume``
completes with nothing twice. Marked ``ray``: run with ``-m ray`` (they take a minute or two)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.scale.crash import check_once, folder_of_clips, reading, score_process, summary_of, wait_until
from tests.support.arrow import read

pytestmark = pytest.mark.ray

LENGTHS = {"a.mp4": 60, "b.mp4": 240, "c.mp4": 30, "d.mp4": 120, "long.mp4": 900, "e.mp4": 90}


def run(*args: str, model: str = "none", timeout: float = 300) -> tuple[int, dict, str]:
    """``affbatch score --model MODEL ARGS --json`` in a subprocess: (status, summary, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "affbatch", "score", "--model", model, *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, summary_of(stdout), stderr


def test_info_reports_the_cluster(ray_cluster):
    done = subprocess.run(
        [sys.executable, "-m", "affbatch", "info", "--json", "--ray", ray_cluster.address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cluster = json.loads(done.stdout)["ray_cluster"]
    assert cluster["cpus"] == 2 and cluster["gpus"] == 0 and len(cluster["nodes"]) == 1
    assert cluster["nodes"][0]["address"] == "127.0.0.1"


def test_ray_actors_give_the_traces_of_one_process(ray_cluster, tmp_path):
    from tests.support.face_media import carphone

    folder = tmp_path / "v"
    folder.mkdir()
    for name in ("p.mp4", "q.mp4", "r.mp4"):
        shutil.copy(carphone(), folder / name)
    folder_of_clips(folder, {"blank.mp4": 45})
    status, one, err = run(str(folder), "--out", str(tmp_path / "one.arrow"), "--workers", "1", model="prior")
    assert status == 0, err
    status, two, err = run(
        str(folder), "--out", str(tmp_path / "ray.arrow"), "--ray", ray_cluster.address, "--workers", "2", model="prior"
    )
    assert status == 0, err
    assert "(2 Ray actors on 1 nodes)" in err
    a, b = read(tmp_path / "one.arrow"), read(tmp_path / "ray.arrow")
    assert a.num_rows > 0 and a["valence"].null_count < a.num_rows
    assert a.equals(b) and a.schema.metadata == b.schema.metadata
    print(f"local 1 worker: {one['frames_per_s']} frames/s; ray 2 actors: {two['frames_per_s']} frames/s")


def test_an_actor_killed_mid_video_is_restarted_and_its_video_redone(ray_cluster, tmp_path):
    expected = folder_of_clips(tmp_path / "v", LENGTHS)
    killed: list[int] = []

    thread = _kill_actors_reading(ray_cluster, "long.mp4", 1, killed)
    status, summary, stderr = run(
        str(tmp_path / "v"), "--out", str(tmp_path / "t.arrow"), "--ray", ray_cluster.address, "--workers", "2"
    )
    thread.join()
    assert killed, "no actor was seen decoding long.mp4"
    assert status == 0, stderr
    assert summary["ok"] == len(expected)
    rows = check_once(tmp_path / "t.arrow", expected)
    assert all(r["status"] == "ok" for r in rows)
    assert f"process {killed[0]} died; Ray restarted it" in stderr, stderr
    print(f"\nray actor SIGKILL: manifest {len(rows)} rows for {len(expected)} videos, all ok; redone after a restart")


def test_driver_killed_then_resume_scores_nothing_twice(ray_cluster, tmp_path):
    names = folder_of_clips(tmp_path / "v", {f"v{i}.mp4": 240 for i in range(8)})
    out = tmp_path / "t.arrow"
    parts = tmp_path / "t.arrow.parts"
    process = score_process(str(tmp_path / "v"), "--out", str(out), "--ray", ray_cluster.address, "--workers", "2")
    try:
        wait_until(lambda: len(list(parts.glob("*.json"))) >= 2 or process.poll() is not None, 180, "commits")
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    committed = len(list(parts.glob("*.json")))
    assert 2 <= committed < 8 and not out.exists()
    # Ray ends the actors of a driver that is gone.
    wait_until(lambda: not ray_cluster.actors(), 60, "Ray to end the dead driver's actors")

    status, summary, stderr = run(str(tmp_path / "v"), "--out", str(out), "--ray", ray_cluster.address, "--resume")
    assert status == 0, stderr
    assert summary["reused"] == committed and summary["ok"] == 8
    assert stderr.count(": ok, 240 frames") == 8 - committed
    rows = check_once(out, names)
    print(
        f"\nray driver SIGKILL after {committed}/8 committed; --resume reused {committed}, scored {8 - committed}; "
        f"manifest {len(rows)} rows, each once"
    )


def _kill_actors_reading(cluster, name: str, times: int, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs an actor while it decodes the video ``name``, ``times`` times (a
    restarted actor is a new process: Ray's retry of the video is killed too when times > 1)."""

    def killer() -> None:
        deadline = time.monotonic() + 120
        while len(killed) < times and time.monotonic() < deadline:
            for pid in cluster.actors():
                if pid not in killed and reading(pid, name):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.002)

    thread = threading.Thread(target=killer)
    thread.start()
    return thread


def test_a_video_whose_actor_dies_twice_is_recorded_failed(ray_cluster, tmp_path):
    """One actor; the long video goes first and its actor is killed on both attempts (Ray's
    retry): that video fails with Ray's reason, the others are scored by the restarted actor."""
    expected = folder_of_clips(tmp_path / "v", {"long.mp4": 900, "a.mp4": 30, "b.mp4": 60})
    killed: list[int] = []
    thread = _kill_actors_reading(ray_cluster, "long.mp4", 2, killed)
    status, summary, stderr = run(
        str(tmp_path / "v"), "--out", str(tmp_path / "t.arrow"), "--ray", ray_cluster.address, "--workers", "1"
    )
    thread.join()
    assert len(killed) == 2, killed
    assert status == 1, stderr
    rows = check_once(tmp_path / "t.arrow", expected)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["video"] for r in failed] == ["long.mp4"]
    assert failed[0]["error"].startswith("its Ray actor died on each of 2 attempts (")
    assert summary["ok"] == 2
    print(f"\nray actor killed twice: manifest {len(rows)} rows, 2 ok, long.mp4 failed: {failed[0]['error'][:90]}")


def test_ctrl_c_ends_the_actors_and_says_how_to_resume(ray_cluster, tmp_path):
    names = folder_of_clips(tmp_path / "v", {f"v{i}.mp4": 240 for i in range(8)})
    out = tmp_path / "t.arrow"
    parts = tmp_path / "t.arrow.parts"
    process = score_process(str(tmp_path / "v"), "--out", str(out), "--ray", ray_cluster.address, "--workers", "2")
    try:
        wait_until(lambda: len(list(parts.glob("*.json"))) >= 1 or process.poll() is not None, 180, "a commit")
        assert process.poll() is None, process.communicate()
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole job
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert f"rerun with --resume to complete {out}" in stderr and "Traceback" not in stderr
    wait_until(lambda: not ray_cluster.actors(), 30, "the actors to end")
    committed = len(list(parts.glob("*.json")))
    status, summary, stderr = run(str(tmp_path / "v"), "--out", str(out), "--ray", ray_cluster.address, "--resume")
    assert status == 0, stderr
    assert summary["reused"] == committed and summary["ok"] == 8
    check_once(out, names)
