"""--out's own failures are the user's environment, said as such: a folder that cannot be
written, a read-only mount, a full disk. Up front (before the models load) they are one-line
usage errors (exit 2); a disk that fills mid-run keeps every finished video for --resume
(exit 1). A missing folder of OUT is created.

The file systems are real: a tmpfs mounted for the test (small, or read-only), and a folder
the kernel refuses to let the CLI write (root's override dropped with setpriv). Where the
machine does not allow that, the test is skipped saying what is not tested.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from affbatch.destination import OutputFailure
from affbatch.pipeline import ScoreOptions
from affbatch.run import Progress, score_run
from tests.support.arrow import read

SETPRIV = shutil.which("setpriv")


@pytest.fixture(autouse=True)
def _needs_ffmpeg(ffmpeg):
    """The clips are made by Debian's ffmpeg (skipped, or failed under AFFBATCH_REQUIRE_FFMPEG=1,
    without it)."""


def video(path: Path, seconds: float = 1.0) -> Path:
    """A real, very compressible clip (grey frames at 30 fps): a few kB for many frames."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=32x32:r=30",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", str(path)],
        check=True,
    )
    return path


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str):
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"NOT TESTED: cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def cli(*args: str, prefix=(), cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "affbatch", "score", "--model", "none", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )


def one_line_usage_error(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("affbatch: error: --out "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert "model:" not in done.stderr  # refused before the models were loaded
    return lines[0]


def test_a_missing_folder_of_out_is_created(tmp_path):
    clip = video(tmp_path / "a.mp4")
    out = tmp_path / "new" / "deeper" / "traces.arrow"
    summary = score_run([clip], out, ScoreOptions(model="none"))
    assert [r.status for r in summary.rows] == ["ok"]
    assert len(read(out)) == 30


def test_out_under_a_file_is_a_usage_error(tmp_path):
    clip = video(tmp_path / "a.mp4")
    (tmp_path / "notes").write_text("a file")
    one_line_usage_error(cli(str(clip), "--out", str(tmp_path / "notes" / "t.arrow")), "notes is a file, not a folder")


def test_a_folder_the_user_cannot_write(tmp_path):
    clip = video(tmp_path / "a.mp4")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:  # root writes anywhere: drop that right for real
        prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search"] if SETPRIV else None
        if prefix is None or subprocess.run([*prefix, "touch", str(locked / "x")], capture_output=True).returncode == 0:
            pytest.skip("NOT TESTED: root's right to write anywhere cannot be dropped here (setpriv)")
    line = one_line_usage_error(
        cli(str(clip), "--out", str(locked / "t.arrow"), prefix=prefix), "permission denied", "choose an --out"
    )
    assert f"cannot write in {locked}" in line
    assert not list(locked.iterdir())


def test_a_read_only_mount(tmp_path):
    clip = video(tmp_path / "a.mp4")
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        one_line_usage_error(cli(str(clip), "--out", str(ro / "t.arrow")), "read-only file system")


def test_too_little_free_space_up_front(tmp_path):
    clips = [video(tmp_path / f"{i}.mp4") for i in range(4)]
    with mounted_tmpfs(tmp_path / "small", "size=64k") as small:
        line = one_line_usage_error(cli(*map(str, clips), "--out", str(small / "t.arrow")), "needed", "free space")
        assert "free in" in line
        assert not list(small.iterdir())


class _FillDisk(Progress):
    """Fills the disk of OUT when the first video is done (another program taking the space)."""

    def __init__(self, filler: Path) -> None:
        self.filler = filler

    def video_done(self, name, status, frames, seconds, error) -> None:
        if not self.filler.exists():
            with open(self.filler, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()


def test_a_disk_that_fills_mid_run_keeps_the_finished_videos(tmp_path):
    clips = [video(tmp_path / f"v{i}.mp4", seconds=2) for i in range(3)]
    with mounted_tmpfs(tmp_path / "disk", "size=2m") as disk:
        out = disk / "t.arrow"
        filler = disk / "filler"
        with pytest.raises(OutputFailure) as caught:
            score_run(clips, out, ScoreOptions(model="none"), progress=_FillDisk(filler))
        message = str(caught.value)
        assert message == (
            f"no space left on device: 1 finished video is kept in {out}.parts; free space and rerun with --resume"
        )
        filler.unlink()
        summary = score_run(clips, out, ScoreOptions(model="none"), resume=True)
        assert [r.status for r in summary.rows] == ["ok"] * 3 and summary.reused == 1
        assert len(read(out)) == 3 * 60


def test_the_cli_exits_1_when_the_disk_fills_mid_run(tmp_path):
    """Long grey clips make far more traces than their size suggests: the rough check up front
    lets the run start, and the disk fills on the third video."""
    clips = [video(tmp_path / f"v{i}.mp4", seconds=120) for i in range(3)]
    with mounted_tmpfs(tmp_path / "disk", "size=700k") as disk:
        out = disk / "t.arrow"
        done = cli(*map(str, clips), "--out", str(out))
        assert done.returncode == 1, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("affbatch: error: no space left on device: "), done.stderr
        assert last.endswith(f"kept in {out}.parts; free space and rerun with --resume"), last
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
