"""``affbatch export``: Aff-Wild2 challenge files (round trip through ``affbatch eval``, line
counts, two-person videos, fills, 30 fps traces mapped back to source frames of real videos),
Parquet read by DuckDB and pyarrow, CSV, smoothing metadata, and errors."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from affbatch.cli import app
from affbatch.evaluation.evaluate import evaluate
from affbatch.evaluation.labels import read_label_file
from affbatch.output.abaw import fill_frames
from affbatch.output.export import ExportOptions, export
from affbatch.output.traces import MANIFEST_SCHEMA, TRACE_SCHEMA, frames_table, manifest_path, with_metadata
from affbatch.output.traces import write_table_atomically as write_arrow
from affbatch.video.framerate import select_frames
from affbatch.video.probe import probe
from tests.support.coded_clips import constant_rate_pts, write_coded_clip

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"
METADATA = {"affbatch_version": "0.1.0", "model": "m", "model_sha256": "ab" * 32, "detector": "d", "fps": "native"}


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def face(frame, track, xc, v, a):
    return (frame, track, xc, v, a)


def faces(rows):
    frame, track, xc, v, a = (np.asarray(c) for c in zip(*rows, strict=True))
    n = len(frame)
    return {
        "frame": frame.astype(np.int64),
        "track": track.astype(np.int32),
        "x1": (xc - 20).astype(np.float32),
        "y1": np.full(n, 40, np.float32),
        "x2": (xc + 20).astype(np.float32),
        "y2": np.full(n, 90, np.float32),
        "det_score": np.full(n, 0.99, np.float32),
        "valence": np.asarray(v, np.float32),
        "arousal": np.asarray(a, np.float32),
    }


def write_run(path: Path, videos: dict[str, tuple], fps: str = "native", manifest: dict | None = None) -> Path:
    """Traces as ``affbatch score`` writes them: ``videos``: name -> (source_frame per output
    frame, face rows, output fps); the manifest from ``manifest`` (name -> fields)."""
    tables = []
    for name, (source, rows, rate) in videos.items():
        source = np.asarray(source)
        tables.append(frames_table(name, source, np.arange(len(source)) / rate, faces(rows) if rows else None))
    table = pa.concat_tables(tables).cast(with_metadata(TRACE_SCHEMA, {**METADATA, "fps": fps}))
    write_arrow(table, path)
    rows = []
    for name, (source, _, rate) in videos.items():
        fields = {"frames": len(source), "native_fps": rate, "duration_s": len(source) / rate, "width": 640}
        fields.update((manifest or {}).get(name, {}))
        rows.append({"video": name, "status": "ok", "error": None, "height": 360, "codec": "h264", "seconds": 1.0})
        rows[-1].update(fields)
    write_arrow(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), manifest_path(path))
    return path


def wave(n, phase=0.0):
    t = np.arange(n)
    return 0.7 * np.sin(t / 9 + phase), 0.5 * np.cos(t / 13 + phase)


def native_dataset(tmp_path) -> tuple[Path, dict]:
    """Four videos at their native rate: one person with gaps; two people (tracks 3 and 5, the
    left one at x=150); one person whose track was cut in two by a missed detection (not two
    people); no face at all."""
    videos, faces_of = {}, {}
    n = 90
    v, a = wave(n)
    one = [face(f, 0, 300, v[f], a[f]) for f in range(n) if not (10 <= f < 20 or f >= 80)]
    videos["one.mp4"] = (np.arange(n), one, 25.0)
    faces_of["one"] = len(one)
    m = 75
    lv, la = wave(m, 1.0)
    rv, ra = wave(m, 2.0)
    two = [face(f, 5, 480, rv[f], ra[f]) for f in range(m)] + [face(f, 3, 150, lv[f], la[f]) for f in range(5, m)]
    videos["pair.mp4"] = (np.arange(m), sorted(two), 30.0)
    faces_of["pair_left"], faces_of["pair_right"] = m - 5, m
    k = 60
    cv, ca = wave(k, 3.0)
    cut = [face(f, 0, 320, cv[f], ca[f]) for f in range(25)] + [face(f, 1, 330, cv[f], ca[f]) for f in range(35, k)]
    videos["cut.mp4"] = (np.arange(k), cut, 30.0)
    faces_of["cut"] = 25  # the longer piece (track 1 has 25 too: the tie goes to the smaller id)
    videos["nobody.mp4"] = (np.arange(40), [], 30.0)
    faces_of["nobody"] = 0
    traces = write_run(tmp_path / "t.arrow", videos)
    return traces, faces_of


# ---------------------------------------------------------------------------------------------
# ABAW: round trip, names, line counts
# ---------------------------------------------------------------------------------------------


def test_round_trip_through_eval_is_ccc_one_on_every_frame_with_a_face(tmp_path):
    traces, faces_of = native_dataset(tmp_path)
    out = tmp_path / "sub"
    result = invoke("export", traces, "--to", "abaw", "--out", out)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.glob("*.txt"))
    assert names == ["cut.txt", "nobody.txt", "one.txt", "pair_left.txt", "pair_right.txt"]
    lines = {p.stem: len(p.read_text().splitlines()) - 1 for p in out.glob("*.txt")}
    assert lines == {"one": 90, "pair_left": 75, "pair_right": 75, "cut": 60, "nobody": 40}
    assert "nobody.txt: no frame of nobody.mp4 has a face: all 40 lines are the median" in result.stderr

    e = evaluate(traces, out)
    assert e.overall.valence == pytest.approx(1.0, abs=1e-9) and e.overall.arousal == pytest.approx(1.0, abs=1e-9)
    for name, count in faces_of.items():
        scores = e.videos[name]
        assert scores["frames"] == count, name  # every frame with a face of that track is scored ...
        assert scores["missing"] == lines[name] - count, name  # ... and only those (fills are not)
        if count:
            assert scores["valence"] == pytest.approx(1.0, abs=1e-9), name
    assert e.videos["pair_left"]["track"] == 3 and e.videos["pair_right"]["track"] == 5
    assert e.overall.frames == sum(faces_of.values())
    assert e.unlabelled_videos == [] and e.labels_without_traces == []


def test_values_are_the_predictions_filled_and_clipped(tmp_path):
    n = 12
    rows = [face(2, 0, 300, 0.25, -0.5), face(3, 0, 300, 1.5, -2.0), face(7, 0, 300, -0.125, 0.75)]
    traces = write_run(tmp_path / "t.arrow", {"v.mp4": (np.arange(n), rows, 30.0)})
    got = {}
    for fill in ("nearest", "linear", "hold", "zero"):
        out = tmp_path / fill
        assert invoke("export", traces, "--to", "abaw", "--out", out, "--fill", fill).exit_code == 0
        label = read_label_file(out / "v.txt")
        got[fill] = label.valence.tolist()
        assert len(label.valence) == n and np.all(np.abs(label.arousal) <= 1)
    # frame 3 is clipped to 1 (valence); frames 0, 1 before the first face; 8.. after the last.
    assert got["nearest"] == [0.25, 0.25, 0.25, 1, 1, 1, -0.125, -0.125, -0.125, -0.125, -0.125, -0.125]
    assert got["hold"] == [0.25, 0.25, 0.25, 1, 1, 1, 1, -0.125, -0.125, -0.125, -0.125, -0.125]
    assert got["zero"] == [0, 0, 0.25, 1, 0, 0, 0, -0.125, 0, 0, 0, 0]
    step = (-0.125 - 1.5) / 4  # interpolated before clipping, between frames 3 and 7
    linear = [0.25, 0.25, 0.25, 1, 1.5 + step, 1.5 + 2 * step, 1.5 + 3 * step, -0.125, -0.125, -0.125, -0.125, -0.125]
    assert got["linear"] == pytest.approx([min(x, 1) for x in linear], abs=1e-6)


def test_fill_by_hand():
    x = np.array([0, 1.0, 0, 0, 0, 5.0, 0])
    known = np.array([0, 1, 0, 0, 0, 1, 0], bool)
    assert fill_frames(x, known, "nearest", 9).tolist() == [1, 1, 1, 1, 5, 5, 5]  # frame 3: a tie, the earlier
    assert fill_frames(x, known, "hold", 9).tolist() == [1, 1, 1, 1, 1, 5, 5]
    assert fill_frames(x, known, "linear", 9).tolist() == [1, 1, 2, 3, 4, 5, 5]
    assert fill_frames(x, known, "zero", 9).tolist() == [0, 1, 0, 0, 0, 5, 0]
    assert fill_frames(x, np.zeros(7, bool), "nearest", 0.25).tolist() == [0.25] * 7


def test_file_format_is_the_challenges(tmp_path):
    traces, _ = native_dataset(tmp_path)
    out = tmp_path / "sub"
    assert invoke("export", traces, "--to", "abaw", "--out", out).exit_code == 0
    text = (out / "one.txt").read_text()
    lines = text.split("\n")
    assert lines[0] == "valence,arousal" and text.endswith("\n") and lines[-1] == ""
    assert all(re.fullmatch(r"-?[01]\.\d{6},-?[01]\.\d{6}", line) for line in lines[1:-1])
    record = json.loads((out / "affbatch-export.json").read_text())
    assert record["fill"] == "nearest" and record["smoothing"] is None and record["traces"]["model"] == "m"
    assert {f["name"]: f["count_from"] for f in record["files"]}["one"] == "manifest"


def test_existing_folder_with_other_label_files_is_refused(tmp_path):
    traces, _ = native_dataset(tmp_path)
    out = tmp_path / "sub"
    out.mkdir()
    (out / "stranger.txt").write_text("valence,arousal\n0,0\n")
    result = invoke("export", traces, "--to", "abaw", "--out", out)
    assert result.exit_code == 2 and "stranger.txt" in result.output and "Traceback" not in result.output
    (out / "stranger.txt").unlink()
    assert invoke("export", traces, "--to", "abaw", "--out", out).exit_code == 0
    assert invoke("export", traces, "--to", "abaw", "--out", out).exit_code == 0  # its own files: rewritten


def test_ambiguous_stems_fail_alone(tmp_path):
    n = 10
    rows = [face(f, 0, 300, 0.1 * (f % 3), 0.0) for f in range(n)]
    traces = write_run(
        tmp_path / "t.arrow",
        {name: (np.arange(n), rows, 30.0) for name in ("a/x.mp4", "b/x.mkv", "y.mp4")},
    )
    result = invoke("export", traces, "--to", "abaw", "--out", tmp_path / "sub")
    assert result.exit_code == 1
    assert "failed: a/x.mp4: eval would match x.txt to nothing: ambiguous: 2 videos named x" in result.stderr
    assert sorted(p.name for p in (tmp_path / "sub").glob("*.txt")) == ["y.txt"]


def test_failed_videos_of_the_manifest_are_listed(tmp_path):
    traces, _ = native_dataset(tmp_path)
    manifest = pa.ipc.open_file(pa.memory_map(str(manifest_path(traces)))).read_all().to_pylist()
    manifest.append({"video": "broken.mp4", "status": "failed", "error": "truncated: ..."})
    write_arrow(pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA), manifest_path(traces))
    result = invoke("export", traces, "--to", "abaw", "--out", tmp_path / "sub")
    assert result.exit_code == 1 and "failed: broken.mp4: failed when scored (truncated: ...)" in result.stderr
    assert len(list((tmp_path / "sub").glob("*.txt"))) == 5


# ---------------------------------------------------------------------------------------------
# ABAW from traces at 30 fps: back to source frames
# ---------------------------------------------------------------------------------------------


def scored_at_30(path: Path, fps: int, frames: int, seed: int = 0):
    """A real coded clip at ``fps`` and traces of it at 30 fps as score writes them: output
    frames from ``select_frames``, one face in every output frame with its own prediction."""
    write_coded_clip(path, constant_rate_pts(frames, Fraction(fps), Fraction(1, 90000)), Fraction(1, 90000), rate=fps)
    source, _ = select_frames(probe(path), "30")
    rng = np.random.default_rng(seed)
    rows = [face(k, 0, 300, *rng.uniform(-0.9, 0.9, 2)) for k in range(len(source))]
    return source, rows


@pytest.mark.parametrize("fps, frames", [(25, 50), (60, 90)])
def test_30fps_traces_are_mapped_back_to_source_frames(tmp_path, fps, frames):
    videos = tmp_path / "videos"
    videos.mkdir()
    source, rows = scored_at_30(videos / "clip.mp4", fps, frames)
    n_out = len(source)
    traces = write_run(tmp_path / "t.arrow", {"clip.mp4": (source, rows, 30.0)}, fps="30")
    out = tmp_path / "sub"
    result = invoke("export", traces, "--to", "abaw", "--out", out, "--videos", videos)
    assert result.exit_code == 0, result.output
    assert "estimated" not in result.stderr
    label = read_label_file(out / "clip.txt")
    assert len(label.valence) == frames  # source frames, not the 30 fps output's n_out
    pred = np.array([r[3] for r in rows], np.float32).astype(np.float64)
    for s in range(frames):
        shown = np.flatnonzero(source == s)
        if len(shown):  # the mean of the output frames showing it
            assert label.valence[s] == pytest.approx(pred[shown].mean(), abs=1e-6)
    dropped = sorted(set(range(frames)) - set(source.tolist()))
    # From 60 fps every other frame is dropped; from 25 fps some are shown twice (and ffmpeg's
    # end-of-stream rounding may still drop the last one).
    assert (len(dropped) >= frames // 3) == (fps > 30) and (n_out > frames) == (fps < 30)
    for s in dropped:  # never shown: filled from the nearest shown source frame
        near = min(set(source.tolist()), key=lambda x: (abs(x - s), x))
        assert label.valence[s] == label.valence[near]
    e = evaluate(traces, out)
    assert e.overall.valence == pytest.approx(1.0, abs=1e-9)
    assert e.overall.frames == frames - len(dropped) and e.overall.missing == len(dropped)
    record = json.loads((out / "affbatch-export.json").read_text())
    assert record["fps"] == "30" and record["files"][0]["count_from"] == "probed video"


def test_30fps_traces_without_the_video_estimate_and_say_so(tmp_path):
    source, rows = scored_at_30(tmp_path / "elsewhere.mp4", 25, 50)
    info = probe(tmp_path / "elsewhere.mp4")
    rate = round(info.native_fps, 6)
    manifest = {"clip.mp4": {"frames": len(source), "native_fps": rate, "duration_s": info.duration_s}}
    traces = write_run(tmp_path / "t.arrow", {"clip.mp4": (source, rows, 30.0)}, fps="30", manifest=manifest)
    result = invoke("export", traces, "--to", "abaw", "--out", tmp_path / "sub")
    assert result.exit_code == 0, result.output
    assert "clip.mp4: source frame count estimated as 50" in result.stderr
    assert len(read_label_file(tmp_path / "sub" / "clip.txt").valence) == 50


def test_a_video_changed_since_scoring_fails(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    source, rows = scored_at_30(videos / "clip.mp4", 25, 50)
    traces = write_run(tmp_path / "t.arrow", {"clip.mp4": (source, rows, 30.0)}, fps="30")
    write_coded_clip(videos / "clip.mp4", constant_rate_pts(40, Fraction(20), Fraction(1, 90000)), Fraction(1, 90000))
    result = invoke("export", traces, "--to", "abaw", "--out", tmp_path / "sub", "--videos", videos)
    assert result.exit_code == 1 and "do not match the traces of clip.mp4" in result.stderr
    assert not list((tmp_path / "sub").glob("*.txt"))


def people_video(path: Path, people: int, frames: int, fps: int, width: int = 400, height: int = 200):
    """Real faces (the packaged portraits) side by side, moving a little, at ``fps``."""
    from tests.support.face_media import portraits, write_rgb_clip

    size = 150
    faces_ = portraits(size)[:people]

    def images():
        for k in range(frames):
            image = np.full((height, width, 3), 90, np.uint8)
            dx = int(round(4 * np.sin(k / 5)))
            for i, f in enumerate(faces_):
                x = 20 + i * 220 + (dx if i == 0 else -dx)
                image[25 : 25 + size, x : x + size] = f
            yield image

    return write_rgb_clip(path, images(), fps)


def test_scored_folder_with_a_two_person_video(tmp_path):
    """The whole path on real faces: score a folder (a two-person video at 25 fps, a one-person
    one at 30) at 30 fps with the packaged models, export, and eval the files back."""
    videos = tmp_path / "videos"
    videos.mkdir()
    people_video(videos / "pair.mp4", 2, 40, 25)
    people_video(videos / "solo.mp4", 1, 30, 30)
    traces = tmp_path / "t.arrow"
    result = invoke("score", videos, "--out", traces)
    assert result.exit_code == 0, result.output
    out = tmp_path / "sub"
    result = invoke("export", traces, "--to", "abaw", "--out", out, "--videos", videos)  # names relative to it
    assert result.exit_code == 0, result.output
    assert "estimated" not in result.stderr
    lines = {p.name: len(p.read_text().splitlines()) - 1 for p in out.glob("*.txt")}
    assert lines == {"pair_left.txt": 40, "pair_right.txt": 40, "solo.txt": 30}
    assert lines["pair_left.txt"] == probe(videos / "pair.mp4").frames
    e = evaluate(traces, out)
    assert e.overall.valence == pytest.approx(1.0, abs=1e-9) and e.overall.arousal == pytest.approx(1.0, abs=1e-9)
    assert e.videos["pair_left"]["track"] != e.videos["pair_right"]["track"]
    assert e.overall.frames + e.overall.missing == 110 and e.overall.frames >= 100  # faces in nearly every frame


# ---------------------------------------------------------------------------------------------
# Parquet and CSV
# ---------------------------------------------------------------------------------------------


def test_parquet_keeps_columns_types_metadata_and_duckdb_reads_it(tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="DuckDB is in the dev extra")
    traces, _ = native_dataset(tmp_path)
    out = tmp_path / "traces.parquet"
    result = invoke("export", traces, "--to", "parquet", "--out", out)
    assert result.exit_code == 0, result.output
    original = pa.ipc.open_file(pa.memory_map(str(traces))).read_all()
    back = pq.read_table(out)
    assert back.schema.equals(original.schema, check_metadata=True)
    assert back.equals(original)
    assert pq.read_schema(out).metadata[b"model"] == b"m"
    manifest = pq.read_table(tmp_path / "traces.videos.parquet")
    assert manifest.column_names == MANIFEST_SCHEMA.names and manifest.num_rows == 4

    con = duckdb.connect()
    counts = dict(con.execute(f"SELECT video, count(*) FROM read_parquet('{out}') GROUP BY video").fetchall())
    grouped = back.group_by("video").aggregate([([], "count_all")])
    expected = dict(zip(grouped["video"].to_pylist(), grouped["count_all"].to_pylist(), strict=True))
    assert counts == expected and sum(counts.values()) == original.num_rows
    nulls = con.execute(f"SELECT count(*) FROM read_parquet('{out}') WHERE valence IS NULL").fetchone()[0]
    assert nulls == original["valence"].null_count > 0


def test_csv_header_nulls_and_metadata(tmp_path):
    import pyarrow.csv as pv

    traces, _ = native_dataset(tmp_path)
    out = tmp_path / "traces.csv"
    assert invoke("export", traces, "--to", "csv", "--out", out).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].replace('"', "").split(",") == TRACE_SCHEMA.names
    assert any(line.endswith(",,,,,,,,") for line in lines[1:])  # a frame without a face: empty cells
    original = pa.ipc.open_file(pa.memory_map(str(traces))).read_all()
    types = {f.name: f.type for f in TRACE_SCHEMA}
    back = pv.read_csv(out, convert_options=pv.ConvertOptions(column_types=types))
    assert back.equals(original.replace_schema_metadata(None).cast(back.schema))
    assert json.loads((tmp_path / "traces.metadata.json").read_text())["model"] == "m"
    assert (tmp_path / "traces.videos.csv").read_text().splitlines()[0].startswith('"video","status"')


def test_smoothing_is_recorded_in_what_is_written(tmp_path):
    traces, _ = native_dataset(tmp_path)
    result = invoke("export", traces, "--to", "parquet", "--out", tmp_path / "s.parquet", "--smooth", "0.5")
    assert result.exit_code == 0, result.output
    meta = json.loads(pq.read_schema(tmp_path / "s.parquet").metadata[b"smoothing"])
    assert meta["window_s"] == 0.5 and "moving mean" in meta["method"]
    raw = pq.read_table(tmp_path / "s.parquet")["valence"]
    assert raw.null_count == pa.ipc.open_file(pa.memory_map(str(traces))).read_all()["valence"].null_count
    assert invoke("export", traces, "--to", "abaw", "--out", tmp_path / "sub", "--smooth", "0.5").exit_code == 0
    assert json.loads((tmp_path / "sub" / "affbatch-export.json").read_text())["smoothing"]["window_s"] == 0.5


def test_library_call(tmp_path):
    traces, _ = native_dataset(tmp_path)
    summary = export(traces, ExportOptions(to="abaw", out=tmp_path / "sub"))
    assert len(summary.abaw.files) == 5 and summary.failed == []


# ---------------------------------------------------------------------------------------------
# Errors and the README
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["--to", "xlsx", "--out", "{tmp}/x"], 2, "--to 'xlsx': choose one of abaw, parquet, csv"),
        (["--to", "abaw", "--out", "{tmp}/x", "--fill", "mean"], 2, "--fill 'mean'"),
        (["--to", "csv", "--out", "{tmp}/x.csv", "--fill", "linear"], 2, "--fill applies to --to abaw only"),
        (["--to", "parquet", "--out", "{tmp}"], 2, "is a folder"),
        (["--to", "parquet", "--out", "{tmp}/no/x.parquet"], 2, "does not exist"),
        (["--to", "abaw", "--out", "{tmp}/x", "--smooth", "0"], 2, "--smooth 0"),
        (["--to", "abaw", "--out", "{tmp}/x", "--videos", "{tmp}/none"], 2, "--videos"),
        (["--to", "abaw", "--out", "{tmp}/x", "--names", "{tmp}/none.txt"], 2, "--names"),
        (["--to", "csv", "--out", "{tmp}/x.csv", "--names", "{tmp}/t.arrow"], 2, "apply to --to abaw only"),
    ],
)
def test_usage_errors(tmp_path, args, status, message):
    traces, _ = native_dataset(tmp_path)
    result = invoke("export", traces, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == status, result.output
    assert message in result.output and "Traceback" not in result.output


def test_missing_traces_is_one_line(tmp_path):
    result = invoke("export", tmp_path / "none.arrow", "--to", "csv", "--out", tmp_path / "x.csv")
    assert result.exit_code == 1 and "none.arrow: file not found" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_readme_usage_lists_every_export_option():
    from typer.main import get_command

    usage = README.read_text().split("## Usage", 1)[1].split("###", 1)[0]
    line = re.search(r"affbatch export .*?(?=\naffbatch |\n```)", usage, re.S)
    assert line, "README usage has no line for affbatch export"
    options = {o for p in get_command(app).commands["export"].params for o in p.opts if o.startswith("--")}
    assert set(re.findall(r"--[a-z][a-z-]*", line.group(0))) == options - {"--help"}


def test_without_a_manifest(tmp_path):
    traces, _ = native_dataset(tmp_path)
    manifest_path(traces).unlink()
    result = invoke("export", traces, "--to", "abaw", "--out", tmp_path / "sub")
    assert result.exit_code == 0, result.output
    assert "no manifest next to" in result.stderr
    assert "one.mp4: source frame count estimated as 90 as the last source frame in the traces" in result.stderr
    result = invoke("export", traces, "--to", "parquet", "--out", tmp_path / "t.parquet")
    assert result.exit_code == 0 and not (tmp_path / "t.videos.parquet").exists()


@pytest.mark.parametrize("as_folder", [False, True])
def test_names_choose_the_files_as_eval_matches_them(tmp_path, as_folder):
    traces, _ = native_dataset(tmp_path)
    wanted = ["one", "pair_left", "pair_right", "cut_left", "cut_right", "gone"]
    if as_folder:
        names = tmp_path / "names"
        names.mkdir()
        for n in wanted:
            (names / f"{n}.txt").write_text("valence,arousal\n")
    else:
        names = tmp_path / "names.txt"
        names.write_text("\n".join(f"{n}.txt" if n == "one" else n for n in wanted) + "\n\n")
    out = tmp_path / "sub"
    result = invoke("export", traces, "--to", "abaw", "--out", out, "--names", names)
    assert result.exit_code == 1, result.output  # "gone" has no traces
    assert "failed: gone: named by --names, but no traces" in result.stderr
    assert "1 videos of the traces are not in --names and are not written: nobody.mp4" in result.stderr
    written = sorted(p.stem for p in out.glob("*.txt"))
    assert written == sorted(wanted[:-1])
    e = evaluate(traces, out)
    # cut.mp4 as two people: its two tracks (0 at x=320, 1 at x=330), left and right, as eval picks them.
    assert (e.videos["cut_left"]["track"], e.videos["cut_right"]["track"]) == (0, 1)
    assert e.overall.valence == pytest.approx(1.0, abs=1e-9)
    assert all(len(read_label_file(out / f"{n}.txt").valence) == 60 for n in ("cut_left", "cut_right"))
