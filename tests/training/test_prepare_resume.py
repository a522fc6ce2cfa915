"""``affbatch-train prepare --resume``: a killed or interrupted prepare goes on from its last
checkpoint and ends with the store an uninterrupted run writes (cropped_aligned inputs: no
detector, so each case takes a second)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from affbatch.errors import UsageError
from training.prepare import PrepareOptions, prepare_cropped_aligned
from training.store import MANIFEST, PROGRESS, CropStore

FRAMES = {"a": 5, "b_left": 7, "b_right": 4, "c": 6, "d": 3}


@pytest.fixture
def inputs(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    root, labels = tmp_path / "cropped_aligned", tmp_path / "labels"
    labels.mkdir()
    rng = np.random.default_rng(0)
    for n, (name, frames) in enumerate(FRAMES.items()):
        (root / name).mkdir(parents=True)
        for k in range(1, frames + 1):
            image = np.kron(rng.integers(0, 256, (7, 7, 3)), np.ones((16, 16, 1))).astype(np.uint8)
            Image.fromarray(image).save(root / name / f"{k:05d}.jpg", quality=95)
        values = [(round(0.1 * n, 2), round(-0.01 * k, 2)) for k in range(frames + 1)]
        (labels / f"{name}.txt").write_text("valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in values))
    return root, labels


def options(out: Path, labels: Path, **kw) -> PrepareOptions:
    settings = {"split": "train", "shard_rows": 4, "checkpoint_seconds": 0, **kw}
    return PrepareOptions(out=out, labels=labels, **settings)


def contents(folder: Path) -> dict:
    """Everything a reader sees, by track: the shard layout may differ, nothing else."""
    store = CropStore(folder)
    seen = {}
    for t in store.tracks:
        seen[(t.video, t.track, t.label)] = (
            t.rows,
            t.labelled,
            t.valid_labels,
            t.missing,
            t.split,
            store.crops(t).tobytes(),
            store.column(t, "source_frame").tolist(),
            np.nan_to_num(store.labels(t), nan=9).tolist(),
        )
    return seen


def test_resume_after_sigkill_gives_the_uninterrupted_store(tmp_path, inputs):
    root, labels = inputs
    prepare_cropped_aligned(root, options(tmp_path / "whole", labels), lambda _: None)
    whole = contents(tmp_path / "whole")
    assert len(whole) == 5

    # Killed while reading the 4th frame of folder c: a, b_left, b_right are checkpointed, c's
    # first rows are in a shard no checkpoint lists.
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        import training.prepare as p
        p.WRITE_CHUNK = 2  # c's frames 1-2 are written before frame 4 is read
        read = p._read_frame
        def killing(path):
            if path.parent.name == "c" and path.name == "00004.jpg":
                os.kill(os.getpid(), signal.SIGKILL)
            return read(path)
        p._read_frame = killing
        opts = p.PrepareOptions(out=Path({str(out)!r}), labels=Path({str(labels)!r}), split="train",
                                shard_rows=4, checkpoint_seconds=0)
        p.prepare_cropped_aligned(Path({str(root)!r}), opts, print)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert not (out / MANIFEST).exists() and (out / PROGRESS).exists()
    listed = {s["file"] for s in json.loads((out / PROGRESS).read_text())["shards"]}
    assert {p.name for p in out.glob("shard-*.arrow")} - listed  # c's partial shard is there

    with pytest.raises(UsageError, match="unfinished prepare .*--resume"):
        prepare_cropped_aligned(root, options(out, labels), lambda _: None)
    lines = []
    summary = prepare_cropped_aligned(root, options(out, labels, resume=True), lines.append)
    assert "3 of 5 inputs were already in" in lines[-1]
    assert [line.split("]")[1].split(":")[0].strip() for line in lines[:-1]] == ["c", "d"]
    assert [v["status"] for v in summary.videos] == ["ok"] * 5 and summary.rows == sum(FRAMES.values())
    assert contents(out) == whole
    assert not (out / PROGRESS).exists()
    listed = {s["file"] for s in CropStore(out).manifest["shards"]}
    assert {p.name for p in out.iterdir()} == listed | {MANIFEST}  # the partial shard is gone


def test_interrupt_keeps_what_is_done(tmp_path, inputs):
    """Ctrl-C between checkpoints: the inputs finished before it are kept all the same."""
    root, labels = inputs
    out = tmp_path / "s"
    done = []

    def report(line):
        done.append(line)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_cropped_aligned(root, options(out, labels, checkpoint_seconds=3600), report)
    assert [v["video"] for v in json.loads((out / PROGRESS).read_text())["videos"]] == ["a", "b_left"]
    lines = []
    prepare_cropped_aligned(root, options(out, labels, resume=True), lines.append)
    assert "2 of 5 inputs were already in" in lines[-1]
    prepare_cropped_aligned(root, options(tmp_path / "whole", labels), lambda _: None)
    assert contents(out) == contents(tmp_path / "whole")


def test_resume_redoes_changed_and_failed_inputs(tmp_path, inputs):
    root, labels = inputs
    out = tmp_path / "s"
    (root / "d" / "00002.jpg").write_bytes(b"not a jpeg")
    summary = prepare_cropped_aligned(root, options(out, labels), lambda _: None)
    assert [v["status"] for v in summary.videos][-1] == "failed"
    before = contents(out)
    # Fix d, add a frame to a: both are done again; the others are reused as they are.
    Image = pytest.importorskip("PIL.Image")
    image = np.full((112, 112, 3), 128, np.uint8)
    Image.fromarray(image).save(root / "d" / "00002.jpg")
    Image.fromarray(image).save(root / "a" / "00006.jpg")
    lines = []
    summary = prepare_cropped_aligned(root, options(out, labels, resume=True), lines.append)
    assert [line.split("]")[1].split(":")[0].strip() for line in lines[:-1]] == ["a", "d"]
    assert "3 of 5 inputs were already in" in lines[-1]
    after = contents(out)
    assert after[("a", 0, "a")][0] == 6 and after[("d", 0, "d")][0] == 3
    assert {k: v for k, v in after.items() if k[0] == "b" or k[0] == "c"} == {
        k: v for k, v in before.items() if k[0] == "b" or k[0] == "c"
    }
    assert sorted(v["video"] for v in CropStore(out).manifest["videos"]) == sorted(FRAMES)


def test_resume_refuses_other_settings(tmp_path, inputs, monkeypatch):
    root, labels = inputs
    out = tmp_path / "s"
    prepare_cropped_aligned(root, options(out, labels), lambda _: None)
    other = tmp_path / "other_labels"
    os.symlink(labels, other)
    with pytest.raises(UsageError, match="other settings \\(labels"):
        prepare_cropped_aligned(root, options(out, other, resume=True), lambda _: None)
    # The same folder spelt relative to the working directory is the same setting.
    monkeypatch.chdir(labels.parent)
    summary = prepare_cropped_aligned(root, options(out, Path(labels.name), resume=True), lambda _: None)
    assert len(summary.videos) == len(FRAMES)
    with pytest.raises(UsageError, match="give one"):
        prepare_cropped_aligned(root, options(out, labels, resume=True, overwrite=True), lambda _: None)
    with pytest.raises(UsageError, match="--resume to add to it"):
        prepare_cropped_aligned(root, options(out, labels), lambda _: None)
    # A finished store resumed with the same inputs: nothing is done again, nothing changes.
    before = contents(out)
    lines = []
    prepare_cropped_aligned(root, options(out, labels, resume=True), lines.append)
    assert lines == ["--resume: 5 of 5 inputs were already in " + str(out) + ", unchanged: reused"]
    assert contents(out) == before


def test_resume_before_the_first_checkpoint_says_so(tmp_path, inputs):
    root, labels = inputs
    out = tmp_path / "s"
    out.mkdir()
    (out / "shard-00000.arrow").write_bytes(b"ARROW1 cut short")
    with pytest.raises(UsageError, match="interrupted before its first checkpoint: nothing to resume"):
        prepare_cropped_aligned(root, options(out, labels, resume=True), lambda _: None)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="is not a crop store"):
        prepare_cropped_aligned(root, options(tmp_path / "other", labels, resume=True), lambda _: None)
    # --resume where nothing was started: an ordinary first run.
    summary = prepare_cropped_aligned(root, options(tmp_path / "new", labels, resume=True), lambda _: None)
    assert len(summary.videos) == len(FRAMES)


def test_ctrl_c_says_how_to_go_on(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import training.prepare
    from training.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.prepare, "prepare_videos", interrupted)
    result = CliRunner().invoke(app, ["prepare", str(tmp_path), "--out", str(tmp_path / "s")])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == (
        f"affbatch-train: interrupted; finished inputs are kept: rerun with --resume to complete {tmp_path / 's'}"
    )
