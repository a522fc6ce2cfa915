"""``affbatch score`` end to end: real clips in, Arrow traces and manifest read back by pyarrow."""

from __future__ import annotations

import json
from fractions import Fraction as F

import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from affbatch.cli import app
from affbatch.output.traces import MANIFEST_SCHEMA, TRACE_SCHEMA
from tests.support.arrow import read
from tests.support.coded_clips import constant_rate_pts, write_coded_clip
from tests.support.reference import ffmpeg_codes

runner = CliRunner()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    write_coded_clip(root / "a25.mp4", constant_rate_pts(25, F(25), F(1, 12800)), F(1, 12800))
    write_coded_clip(
        root / "sub" / "b60.webm", constant_rate_pts(30, F(60), F(1, 1000)), F(1, 1000), codec="libvpx-vp9"
    )
    return root


def test_traces_and_manifest_follow_the_contract(folder, tmp_path, ffmpeg):
    out = tmp_path / "traces.arrow"
    result = runner.invoke(app, ["score", "--model", "none", str(folder), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["videos"] == 2 and summary["ok"] == 2 and summary["failed"] == []

    traces = read(out)
    assert traces.schema.remove_metadata().equals(TRACE_SCHEMA)
    meta = {k.decode(): v.decode() for k, v in traces.schema.metadata.items()}
    assert meta["fps"] == "30" and meta["model"] == "none" and meta["decoder"] == "pyav"
    assert "affbatch_version" in meta

    manifest = read(tmp_path / "traces.videos.arrow")
    assert manifest.schema.remove_metadata().equals(MANIFEST_SCHEMA)
    rows = {r["video"]: r for r in manifest.to_pylist()}
    assert set(rows) == {"a25.mp4", "sub/b60.webm"}
    assert rows["a25.mp4"]["status"] == "ok" and rows["a25.mp4"]["error"] is None
    assert rows["a25.mp4"]["codec"] == "h264" and rows["sub/b60.webm"]["codec"] == "vp9"
    assert rows["a25.mp4"]["native_fps"] == 25.0 and rows["sub/b60.webm"]["native_fps"] == 60.0
    assert (rows["a25.mp4"]["width"], rows["a25.mp4"]["height"]) == (64, 48)
    assert rows["a25.mp4"]["duration_s"] == pytest.approx(1.0)

    for name, path in [("a25.mp4", folder / "a25.mp4"), ("sub/b60.webm", folder / "sub" / "b60.webm")]:
        mine = traces.filter(pc.equal(traces["video"], name))
        expected = ffmpeg_codes(ffmpeg, path, 64, 48)
        # Every output frame exactly once, in order, showing what ffmpeg's fps=30 shows.
        assert mine["frame"].to_pylist() == list(range(len(expected)))
        assert mine["source_frame"].to_pylist() == expected
        np.testing.assert_allclose(mine["time_s"].to_numpy(), np.arange(len(expected)) / 30)
        assert rows[name]["frames"] == len(expected)
        # No model in this version: face columns are null, never made up.
        for column in ("track", "x1", "y1", "x2", "y2", "det_score", "valence", "arousal"):
            assert mine[column].null_count == len(expected)


def test_native_rate_keeps_source_frames(folder, tmp_path):
    out = tmp_path / "native.arrow"
    result = runner.invoke(app, ["score", "--model", "none", str(folder / "sub"), "--out", str(out), "--fps", "native"])
    assert result.exit_code == 0, result.output
    traces = read(out)
    assert traces["source_frame"].to_pylist() == list(range(30))
    assert traces["frame"].to_pylist() == list(range(30))
    np.testing.assert_allclose(traces["time_s"].to_numpy(), np.arange(30) / 60, atol=1e-3)
    assert traces.schema.metadata[b"fps"] == b"native"


def test_batch_size_does_not_change_the_result(folder, tmp_path):
    """With the real models (RetinaFace and the expression prior, ``--model auto``): a second
    of five real faces at once (crops of several faces share a batch), then the codes clips,
    batched 1, 5 and 64 frames at a time through decoding, detection and the affect model.
    Track ids and frames are identical; numbers are equal up to float32 rounding (a batched
    kernel may block its sums differently by batch size)."""
    from tests.support.face_media import group_video

    group, _ = group_video(tmp_path / "group.mp4", size=100, gap=22, seconds=1.0)
    tables = {}
    for batch in ("1", "5", "64"):
        out = tmp_path / f"t{batch}.arrow"
        result = runner.invoke(
            app, ["score", str(group), str(folder), "--out", str(out), "--batch-size", batch]
        )
        assert result.exit_code == 0, result.output
        tables[batch] = read(out)
    reference = tables["64"]
    assert reference["track"].null_count < reference.num_rows // 2  # faces were found and scored
    assert len(set(reference.filter(pc.equal(reference["video"], str(group)))["track"].to_pylist())) == 5
    for batch in ("1", "5"):
        table = tables[batch]
        for column in ("video", "frame", "source_frame", "track"):
            assert table[column].to_pylist() == reference[column].to_pylist(), (batch, column)
        for column in ("x1", "y1", "x2", "y2", "det_score", "valence", "arousal"):
            np.testing.assert_allclose(
                table[column].to_numpy(zero_copy_only=False).astype(np.float64),
                reference[column].to_numpy(zero_copy_only=False).astype(np.float64),
                rtol=0, atol=1e-5, err_msg=f"batch {batch}: {column}",
            )


def test_polars_reads_the_traces(folder, tmp_path):
    polars = pytest.importorskip("polars")
    out = tmp_path / "traces.arrow"
    assert runner.invoke(app, ["score", "--model", "none", str(folder), "--out", str(out)]).exit_code == 0
    frame = polars.read_ipc(out)
    counts = dict(frame.group_by("video").len().iter_rows())
    manifest = polars.read_ipc(tmp_path / "traces.videos.arrow")
    assert counts == dict(manifest.select("video", "frames").iter_rows())
    assert counts["sub/b60.webm"] == 15  # 30 frames at 60 fps: every other one
