"""affbatch plot: traces to a picture, in-process through the CLI, and its data preparation."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from affbatch.cli import app
from affbatch.output.plot import read_traces, video_series
from affbatch.output.traces import TRACE_SCHEMA, frames_table, with_metadata, write_table_atomically

runner = CliRunner()
FRAMES = 90  # 3 s at 30 fps


def faces_of_two_tracks() -> dict[str, np.ndarray]:
    """Track 0 in frames 0-39 and 60-89 (a gap of 20 frames), track 1 in frames 10-29 and 70-89;
    frames 40-59 have no face at all."""
    rows = []
    for k in list(range(0, 40)) + list(range(60, FRAMES)):
        rows.append((k, 0, 0.5 * np.sin(k / 10), 0.3))
    for k in list(range(10, 30)) + list(range(70, FRAMES)):
        rows.append((k, 1, -0.4, 0.6 * np.cos(k / 12)))
    rows.sort()
    frame, track, valence, arousal = (np.array(c) for c in zip(*rows, strict=True))
    n = len(rows)
    return {
        "frame": frame,
        "track": track.astype(np.int32),
        "x1": np.full(n, 10.0),
        "y1": np.full(n, 10.0),
        "x2": np.full(n, 50.0),
        "y2": np.full(n, 50.0),
        "det_score": np.full(n, 0.9),
        "valence": valence,
        "arousal": arousal,
    }


@pytest.fixture
def traces(tmp_path):
    frames = np.arange(FRAMES)
    tables = [
        frames_table("talk.mp4", frames, frames / 30, faces_of_two_tracks()),
        frames_table("empty.mp4", frames[:30], frames[:30] / 30, None),
    ]
    table = pa.concat_tables(tables)
    table = table.cast(with_metadata(TRACE_SCHEMA, {"model": "fer-mini-xception-prior", "fps": "30"}))
    path = tmp_path / "traces.arrow"
    write_table_atomically(table, path)
    return path


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_gaps_become_nan_breaks(traces):
    series = video_series(read_traces(traces), "talk.mp4")
    assert series.frames == FRAMES
    np.testing.assert_allclose(series.time_s, np.arange(FRAMES) / 30)
    assert sorted(series.tracks) == [0, 1]
    v0, a0 = series.tracks[0]
    present0 = np.zeros(FRAMES, bool)
    present0[:40] = present0[60:] = True
    assert np.array_equal(np.isfinite(v0), present0)
    assert np.array_equal(np.isfinite(a0), present0)
    np.testing.assert_allclose(v0[5], 0.5 * np.sin(0.5), rtol=1e-6)
    v1, _ = series.tracks[1]
    assert np.isfinite(v1).sum() == 40 and np.isnan(v1[:10]).all() and np.isnan(v1[30:70]).all()
    no_face = np.zeros(FRAMES, bool)
    no_face[40:60] = True
    assert np.array_equal(series.no_face, no_face)


def test_video_without_faces_has_no_tracks(traces):
    series = video_series(read_traces(traces), "empty.mp4")
    assert series.tracks == {} and series.no_face.all() and series.frames == 30


def test_plot_writes_a_png(traces, tmp_path):
    out = tmp_path / "talk.png"
    result = runner.invoke(app, ["plot", str(traces), "--out", str(out), "--video", "talk.mp4"])
    assert result.exit_code == 0, result.output
    width, height = png_size(out)
    assert 800 <= width <= 2000 and 300 <= height <= 1200, (width, height)
    assert "talk.mp4" in result.output


def test_several_videos_draw_those_with_faces_and_say_so(traces, tmp_path):
    out = tmp_path / "all.png"
    result = runner.invoke(app, ["plot", str(traces), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert png_size(out)[0] >= 800
    assert "1 without a face" in result.output and "--video" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--video", "nope.mp4"], "--video 'nope.mp4': not in"),
        (["--video", "empty.mp4"], "empty.mp4: no face in any of its 30 frames"),
    ],
)
def test_video_errors_exit_1_with_one_line(traces, tmp_path, args, message):
    result = runner.invoke(app, ["plot", str(traces), "--out", str(tmp_path / "x.png"), *args])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("affbatch: error: ") and message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    if args[1] == "nope.mp4":
        assert "talk.mp4, empty.mp4" in result.output  # the videos it does hold
    assert not (tmp_path / "x.png").exists()


def test_file_errors_exit_1_with_one_line(tmp_path):
    text = tmp_path / "notes.arrow"
    text.write_text("not arrow\n")
    other = tmp_path / "other.arrow"
    write_table_atomically(pa.table({"a": [1, 2]}), other)
    for path, message in (
        (tmp_path / "missing.arrow", "file not found"),
        (text, "not an Arrow traces file"),
        (other, "not a traces file: missing columns video, frame"),
    ):
        result = runner.invoke(app, ["plot", str(path), "--out", str(tmp_path / "x.png")])
        assert result.exit_code == 1, result.output
        assert result.output.startswith("affbatch: error: ") and message in result.output
        assert result.output.count("\n") == 1


def test_usage_errors_exit_2(traces, tmp_path):
    assert runner.invoke(app, ["plot", str(traces)]).exit_code == 2  # no --out
    result = runner.invoke(app, ["plot", str(traces), "--out", str(tmp_path / "x.xyz")])
    assert result.exit_code == 2 and "give a file name ending in .png" in result.output
