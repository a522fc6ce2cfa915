"""Shared by the local and the Ray crash tests: media, process lookup, and the checks that every
video is in OUT and its manifest exactly once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pyarrow.compute as pc

from tests.support.arrow import manifest_path, read
from tests.support.coded_clips import constant_rate_pts, write_coded_clip


def clip(path: Path, frames: int, seed: int = 0, size: tuple[int, int] = (320, 240)) -> Path:
    tb = Fraction(1, 30)
    return write_coded_clip(
        path,
        constant_rate_pts(frames, Fraction(30), tb),
        tb,
        rate=30,
        width=size[0],
        height=size[1],
        noise_seed=seed,
        options={"preset": "ultrafast"},
    )


def folder_of_clips(folder: Path, lengths: dict[str, int]) -> dict[str, int]:
    """Clips named and sized as ``lengths`` (frames at 30 fps); equal lengths share one encode."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[int, Path] = {}
    for name, frames in lengths.items():
        if frames in made:
            shutil.copy(made[frames], folder / name)
        else:
            made[frames] = clip(folder / name, frames, seed=frames)
    return dict(lengths)


def check_once(out: Path, expected: dict[str, int], status: str = "ok") -> list[dict]:
    """OUT and its manifest hold every expected video exactly once, with every frame once."""
    rows = read(manifest_path(out)).to_pylist()
    names = [r["video"] for r in rows]
    assert sorted(names) == sorted(expected) and len(set(names)) == len(names), names
    traces = read(out)
    for name, frames in expected.items():
        row = next(r for r in rows if r["video"] == name)
        if row["status"] != "ok":
            continue
        assert row["frames"] == frames, row
        mine = traces.filter(pc.equal(traces["video"], name))
        assert mine["frame"].to_pylist() == list(range(frames)), name
    runs = [k for k, v in enumerate(traces["video"].to_pylist()) if k == 0 or traces["video"][k - 1].as_py() != v]
    assert len(runs) == sum(r["status"] == "ok" for r in rows), "a video's rows appear twice in OUT"
    return rows


def children(pid: int, named: str = "") -> list[int]:
    """Process ids whose parent is ``pid`` and whose command line holds ``named`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command (which may hold spaces) in parentheses: state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and named in _cmdline(entry):
            out.append(int(entry.name))
    return out


def _cmdline(entry: Path) -> str:
    try:
        return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def reading(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a file called ``name`` open: it is decoding that video. A
    test kills a worker then, mid-video whatever the machine's speed, where a fixed delay can
    fall after a short video is done."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or not ours to read
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(os.sep + name):
                return True
        except OSError:
            continue
    return False


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def score_process(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m affbatch score --model none ARGS`` in its own session (as a terminal's job)."""
    return subprocess.Popen(
        [sys.executable, "-m", "affbatch", "score", "--model", "none", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def summary_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :]) if "{" in stdout else {}
