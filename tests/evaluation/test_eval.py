"""Aff-Wild2 label files and ``affbatch eval`` (the library function and the CLI, in-process).

Traces are built with ``affbatch.output.traces.frames_table`` and written as ``affbatch score`` writes
them; expected scores come from a plain-Python join written here and the eq. (1) reference of
test_metrics, so a wrong join, a wrong track, or per-video averaging changes the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from affbatch.cli import app
from affbatch.errors import AffbatchError, LabelError
from affbatch.evaluation.evaluate import evaluate
from affbatch.evaluation.labels import INVALID_LABEL, read_label_dir, read_label_file, split_person
from affbatch.output.traces import MANIFEST_SCHEMA, frames_table, manifest_path, write_table_atomically

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def ccc_reference(x, y) -> float:
    """Eq. (1) of the paper, population moments, float64 (as in test_metrics)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    mean_x, mean_y = sum(x) / n, sum(y) / n
    s_xy = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True)) / n
    s_x2 = sum((a - mean_x) ** 2 for a in x) / n
    s_y2 = sum((b - mean_y) ** 2 for b in y) / n
    return 2 * s_xy / (s_x2 + s_y2 + (mean_x - mean_y) ** 2)


def write_labels(folder: Path, name: str, valence, arousal, header: str = "valence,arousal") -> Path:
    """``folder/name.txt`` in the Aff-Wild2 format; values written with 4 decimals."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{_fmt(v)},{_fmt(a)}" for v, a in zip(valence, arousal, strict=True)]
    path = folder / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fmt(x: float) -> str:
    return "-5" if x == INVALID_LABEL else f"{x:.4f}"


def as_written(values) -> np.ndarray:
    """The values a label file written by write_labels holds."""
    return np.array([float(_fmt(v)) for v in values])


def face_rows(rows: list[tuple]) -> dict[str, np.ndarray]:
    """Face columns for frames_table from (frame, track, x_centre, valence, arousal) tuples."""
    frame, track, xc, val, aro = (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 5
    xc = np.asarray(xc, np.float64)
    n = len(frame)
    return {
        "frame": np.asarray(frame, np.int64),
        "track": np.asarray(track, np.int32),
        "x1": (xc - 20).astype(np.float32),
        "y1": np.full(n, 50, np.float32),
        "x2": (xc + 20).astype(np.float32),
        "y2": np.full(n, 100, np.float32),
        "det_score": np.full(n, 0.99, np.float32),
        "valence": np.asarray(val, np.float32),
        "arousal": np.asarray(aro, np.float32),
    }


def video_table(video: str, source_frame, rows: list[tuple] | None) -> pa.Table:
    source_frame = np.asarray(source_frame)
    time_s = np.arange(len(source_frame)) / 30.0
    return frames_table(video, source_frame, time_s, face_rows(rows) if rows else None)


def write_traces(path: Path, tables: list[pa.Table]) -> Path:
    # Concatenated tables keep one chunk per video: the file holds several record batches, as
    # affbatch score's output does.
    write_table_atomically(pa.concat_tables(tables), path)
    return path


def write_manifest(traces: Path, widths: dict[str, int | None]) -> None:
    n = len(widths)
    table = pa.Table.from_pydict(
        {
            "video": list(widths),
            "status": ["ok"] * n,
            "error": [None] * n,
            "frames": [10] * n,
            "native_fps": [30.0] * n,
            "duration_s": [1.0] * n,
            "width": list(widths.values()),
            "height": [480] * n,
            "codec": ["h264"] * n,
            "seconds": [0.1] * n,
        },
        schema=MANIFEST_SCHEMA,
    )
    write_table_atomically(table, manifest_path(traces))


def reference_join(valence, arousal, rows: list[tuple], source_frame, track):
    """Plain-Python join: per valid labelled source frame, the mean prediction of ``track``.

    ``rows`` are face_rows tuples (frame, track, x, valence, arousal); a valence or arousal of
    None means a null prediction. Returns (v_true, v_pred, a_true, a_pred, missing).
    """
    preds: dict[int, list[tuple[float, float]]] = {}
    for frame, t, _x, v, a in rows:
        if t == track and v is not None and a is not None:
            preds.setdefault(int(source_frame[frame]), []).append((float(np.float32(v)), float(np.float32(a))))
    out = ([], [], [], [])
    missing = 0
    for k, (lv, la) in enumerate(zip(valence, arousal, strict=True)):
        if lv == INVALID_LABEL or la == INVALID_LABEL:
            continue
        if k not in preds:
            missing += 1
            continue
        p = preds[k]
        out[0].append(lv)
        out[1].append(sum(v for v, _ in p) / len(p))
        out[2].append(la)
        out[3].append(sum(a for _, a in p) / len(p))
    return (*(np.array(c) for c in out), missing)


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_error(result, *fragments: str) -> None:
    """Exit status 1, one 'affbatch: error: ...' line on stderr naming ``fragments``, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("affbatch: error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------------------------------------
# Label files
# ---------------------------------------------------------------------------------------------


def test_read_label_file_values_and_invalid_frames(tmp_path):
    path = tmp_path / "vid.txt"
    path.write_text("valence,arousal\n0.5,-0.25\n-5,0.1\n0.2,-5\n-5,-5\n-1,1\n0,0\n")
    label = read_label_file(path)
    assert label.path == path and label.stem == "vid" and label.person is None and label.name == "vid"
    assert label.valence.dtype == np.float64
    assert label.valence.tolist() == [0.5, -5.0, 0.2, -5.0, -1.0, 0.0]
    assert label.arousal.tolist() == [-0.25, 0.1, -5.0, -5.0, 1.0, 0.0]
    # A frame is invalid when either value is -5; line k+1 is source frame k.
    assert label.valid().tolist() == [0, 4, 5]


def test_read_label_file_trailing_blank_lines_bom_crlf_and_spaces(tmp_path):
    path = tmp_path / "vid.txt"
    path.write_bytes("\ufeffValence, Arousal\r\n0.5, -0.25\r\n 0.1 ,0.2\r\n\r\n\r\n  \n".encode())
    label = read_label_file(path)
    assert label.valence.tolist() == [0.5, 0.1]
    assert label.arousal.tolist() == [-0.25, 0.2]


def test_read_label_file_header_only(tmp_path):
    path = tmp_path / "vid.txt"
    path.write_text("valence,arousal\n")
    label = read_label_file(path)
    assert len(label.valence) == 0 and len(label.valid()) == 0


@pytest.mark.parametrize(
    "text",
    [
        "0.5,0.5\n0.1,0.1\n",  # no header: the first line is data
        "arousal,valence\n0.5,0.5\n",  # swapped columns
        "valence\n0.5\n",
        "valence,arousal,expression\n0.5,0.5,1\n",
        "",  # empty file
        "\n",
    ],
)
def test_header_required(tmp_path, text):
    path = tmp_path / "vid.txt"
    path.write_text(text)
    with pytest.raises(LabelError, match="valence,arousal") as info:
        read_label_file(path)
    assert str(info.value).startswith(f"{path}:1:")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "body,bad_line",
    [
        ("0.5,0.5\n0.1\n", 3),  # one value
        ("0.5,0.5\n0.2,0.3\n0.1,0.2,0.3\n", 4),  # three values
        ("abc,0.1\n", 2),
        ("0.1;0.2\n", 2),
        ("0.5,0.5\n\n0.1,0.1\n", 3),  # blank line before the end
        ("0.5,0.5\n,\n", 3),
        ("0.1,0.2,\n", 2),
    ],
)
def test_malformed_line_names_path_and_line(tmp_path, body, bad_line):
    path = tmp_path / "vid.txt"
    path.write_text("valence,arousal\n" + body)
    with pytest.raises(LabelError) as info:
        read_label_file(path)
    assert str(info.value).startswith(f"{path}:{bad_line}:"), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("line", ["1.5,0", "0,-1.01", "-5.5,0", "5,0", "0,-4", "nan,0", "0,inf", "-inf,0"])
def test_values_outside_range_that_are_not_the_marker(tmp_path, line):
    path = tmp_path / "vid.txt"
    path.write_text(f"valence,arousal\n0,0\n{line}\n")
    with pytest.raises(LabelError, match="outside") as info:
        read_label_file(path)
    assert str(info.value).startswith(f"{path}:3:")


def test_marker_spellings_and_range_bounds(tmp_path):
    path = tmp_path / "vid.txt"
    path.write_text("valence,arousal\n-5.0,1.0\n-1.0,-5.00\n1,-1\n")
    label = read_label_file(path)
    assert label.valence.tolist() == [-5.0, -1.0, 1.0]
    assert label.valid().tolist() == [2]


def test_unreadable_label_file_is_label_error(tmp_path):
    path = tmp_path / "vid.txt"
    path.write_bytes(b"valence,arousal\n\xff\xfe0.1,0.2\n")
    with pytest.raises(LabelError, match="cannot read") as info:
        read_label_file(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    "name,expected",
    [
        ("video", ("video", None)),
        ("video_left", ("video", "left")),
        ("video_right", ("video", "right")),
        ("10-60-1280x720_right", ("10-60-1280x720", "right")),
        ("video_leftish", ("video_leftish", None)),
        ("videoleft", ("videoleft", None)),
        ("a_left_right", ("a_left", "right")),
    ],
)
def test_split_person(name, expected):
    assert split_person(name) == expected


def test_read_label_file_person_suffix(tmp_path):
    label = read_label_file(write_labels(tmp_path, "10-60-1280x720_left", [0.1], [0.2]))
    assert (label.stem, label.person, label.name) == ("10-60-1280x720", "left", "10-60-1280x720_left")


def test_read_label_dir_groups_by_video_stem(tmp_path):
    write_labels(tmp_path, "a", [0.1], [0.1])
    write_labels(tmp_path, "b_left", [0.1], [0.1])
    write_labels(tmp_path, "b_right", [0.1], [0.1])
    (tmp_path / "notes.md").write_text("not a label")
    write_labels(tmp_path / "sub", "c", [0.1], [0.1])  # subfolders are not searched
    grouped = read_label_dir(tmp_path)
    assert sorted(grouped) == ["a", "b"]
    assert [(f.name, f.person) for f in grouped["b"]] == [("b_left", "left"), ("b_right", "right")]


def test_label_dir_without_txt_hints_at_subfolders(tmp_path):
    write_labels(tmp_path / "Train_Set", "a", [0.1], [0.1])
    write_labels(tmp_path / "Validation_Set", "b", [0.1], [0.1])
    (tmp_path / "Empty").mkdir()
    with pytest.raises(LabelError) as info:
        read_label_dir(tmp_path)
    msg = str(info.value)
    assert "no .txt label files" in msg and str(tmp_path) in msg
    assert "Train_Set" in msg and "Validation_Set" in msg and "Empty" not in msg


def test_label_dir_empty_or_missing(tmp_path):
    with pytest.raises(LabelError, match="no .txt label files") as info:
        read_label_dir(tmp_path)
    assert "subfolders" not in str(info.value)
    with pytest.raises(LabelError, match="not a folder"):
        read_label_dir(tmp_path / "nope")


def test_label_dir_bad_file_names_file_and_line(tmp_path):
    write_labels(tmp_path, "a", [0.1], [0.1])
    bad = tmp_path / "b.txt"
    bad.write_text("valence,arousal\n0.1,0.1\n0.2,x\n")
    with pytest.raises(LabelError) as info:
        read_label_dir(tmp_path)
    assert str(info.value).startswith(f"{bad}:3:")


# ---------------------------------------------------------------------------------------------
# evaluate(): small exact case, by hand
# ---------------------------------------------------------------------------------------------


def test_join_on_source_frame_by_hand(tmp_path):
    # A 25 fps video at 30 fps: output frames 0..5 show source frames 0,0,1,2,3,4 (source frame 0
    # twice, with different predictions). Track 0 covers every frame; output frame 4 has no face.
    source_frame = [0, 0, 1, 2, 3, 4]
    rows = [
        (0, 0, 100, 0.1, 0.5),
        (1, 0, 100, 0.3, 0.7),  # same source frame 0: averaged to (0.2, 0.6)
        (2, 0, 100, 0.4, 0.1),
        (3, 0, 100, -0.2, -0.3),
        (5, 0, 100, 0.0, 0.2),
    ]
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", source_frame, rows)])
    # Source frames 0..6: frame 2 invalid (arousal -5), 3 labelled but no face (missing),
    # 5 and 6 beyond the traces (missing), 4 has a prediction.
    valence = [0.25, 0.5, 0.9, 0.1, -0.5, 0.3, 0.3]
    arousal = [0.5, 0.0, -5, 0.2, -0.25, 0.1, 0.1]
    write_labels(tmp_path / "labels", "v", valence, arousal)

    result = evaluate(traces, tmp_path / "labels")
    v = result.videos["v"]
    assert v["video"] == "v.mp4" and v["track"] == 0
    assert v["frames"] == 3 and v["missing"] == 3

    # Samples: source frames 0, 1, 4.
    def f32(x):  # the value a float32 column holds, as float64
        return float(np.float32(x))

    v_true, v_pred = [0.25, 0.5, -0.5], [(f32(0.1) + f32(0.3)) / 2, f32(0.4), f32(0.0)]
    a_true, a_pred = [0.5, 0.0, -0.25], [(f32(0.5) + f32(0.7)) / 2, f32(0.1), f32(0.2)]
    assert v["valence"] == pytest.approx(ccc_reference(v_true, v_pred), abs=1e-12)
    assert v["arousal"] == pytest.approx(ccc_reference(a_true, a_pred), abs=1e-12)
    assert v["mean"] == pytest.approx((v["valence"] + v["arousal"]) / 2, abs=1e-15)
    # A join that counted the repeated source frame twice (or took one of its rows) differs:
    twice = ccc_reference([0.25, 0.25, 0.5, -0.5], [0.1, 0.3, 0.4, 0.0])
    first = ccc_reference(v_true, [0.1, 0.4, 0.0])
    assert abs(v["valence"] - twice) > 1e-3 and abs(v["valence"] - first) > 1e-3
    o = result.overall
    assert (o.valence, o.arousal, o.frames, o.missing) == (v["valence"], v["arousal"], 3, 3)
    assert result.unlabelled_videos == [] and result.labels_without_traces == []


def test_join_uses_source_frame_not_frame(tmp_path):
    # Output frame k shows source frame k + 2 (e.g. the first two source frames were dropped).
    source_frame = [2, 3, 4, 5]
    rows = [(k, 1, 50, p, -p) for k, p in enumerate([0.1, 0.2, 0.3, 0.4])]
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", source_frame, rows)])
    labels = [0.9, 0.8, 0.1, 0.2, 0.3, 0.4]
    write_labels(tmp_path / "labels", "v", labels, [-x for x in labels])
    v = evaluate(traces, tmp_path / "labels").videos["v"]
    assert (v["frames"], v["missing"]) == (4, 2)
    assert v["valence"] == pytest.approx(ccc_reference([0.1, 0.2, 0.3, 0.4], np.float32([0.1, 0.2, 0.3, 0.4])), 1e-12)
    assert v["valence"] > 0.999


def test_longest_track_for_plain_label_file(tmp_path):
    # Track 9 is on 8 frames: the longest. Track 2 (5 frames, first to appear, perfect
    # predictions) and track 4 (7 frames) are not chosen.
    labels = np.linspace(-0.8, 0.8, 10)
    rows = [(k, 2, 50, labels[k], labels[k]) for k in range(5)]
    rows += [(k, 9, 300, 0.5 * labels[k] + 0.1, -labels[k]) for k in range(2, 10)]
    rows += [(k, 4, 500, labels[k], 0.0) for k in range(3, 10)]
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", np.arange(10), rows)])
    write_labels(tmp_path / "labels", "v", labels, labels)
    v = evaluate(traces, tmp_path / "labels").videos["v"]
    assert v["track"] == 9
    lv = as_written(labels)
    exp = reference_join(lv, lv, rows, np.arange(10), 9)
    assert (v["frames"], v["missing"]) == (8, 2) == (len(exp[0]), exp[4])
    assert v["valence"] == pytest.approx(ccc_reference(exp[0], exp[1]), abs=1e-12)
    assert v["arousal"] == pytest.approx(ccc_reference(exp[2], exp[3]), abs=1e-12)
    assert v["arousal"] < 0


def test_equally_long_tracks_tie_to_the_smaller_id(tmp_path):
    rows = [(k, 7, 50, 0.1 * k, 0.1 * k) for k in range(5)] + [(k, 3, 300, -0.1 * k, 0.1) for k in range(5)]
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", np.arange(5), rows)])
    write_labels(tmp_path / "labels", "v", [0.0, 0.1, 0.2, 0.3, 0.4], [0.0, 0.1, 0.2, 0.3, 0.4])
    assert evaluate(traces, tmp_path / "labels").videos["v"]["track"] == 3


def test_left_right_map_to_two_longest_tracks_by_median_centre_x(tmp_path):
    n = 30
    rng = np.random.default_rng(3)
    lv_left, la_left = rng.uniform(-0.9, 0.9, n), rng.uniform(-0.9, 0.9, n)
    lv_right, la_right = rng.uniform(-0.9, 0.9, n), rng.uniform(-0.9, 0.9, n)
    rows = []
    for k in range(n):
        # Track 3 is the right person (centre 330 on most frames), track 5 the left one (300).
        # Each has a few glitches to the other side (centre 20 / 630): by mean centre, or by the
        # first box, the order would flip; by median it does not.
        x3 = 330 if k % 10 else 20
        rows.append((k, 3, x3, 0.8 * lv_right[k], 0.8 * la_right[k] + 0.05))
        if k not in (4, 5):
            x5 = 630 if k in (0, 9, 17) else 300
            rows.append((k, 5, x5, 0.6 * lv_left[k] - 0.1, 0.9 * la_left[k]))
        if k < 3:
            rows.append((k, 1, 10, 0.0, 0.0))  # a short track, the left-most of all
    traces = write_traces(tmp_path / "t.arrow", [video_table("two.mp4", np.arange(n), rows)])
    labels = tmp_path / "labels"
    write_labels(labels, "two_left", lv_left, la_left)
    write_labels(labels, "two_right", lv_right, la_right)

    result = evaluate(traces, labels)
    left, right = result.videos["two_left"], result.videos["two_right"]
    assert (left["video"], left["track"]) == ("two.mp4", 5)
    assert (right["video"], right["track"]) == ("two.mp4", 3)
    for got, track, lv, la in ((left, 5, lv_left, la_left), (right, 3, lv_right, la_right)):
        v_true, v_pred, a_true, a_pred, missing = reference_join(
            as_written(lv), as_written(la), rows, np.arange(n), track
        )
        assert (got["frames"], got["missing"]) == (len(v_true), missing)
        assert got["valence"] == pytest.approx(ccc_reference(v_true, v_pred), abs=1e-12)
        assert got["arousal"] == pytest.approx(ccc_reference(a_true, a_pred), abs=1e-12)
    assert (left["frames"], left["missing"]) == (28, 2)
    assert (right["frames"], right["missing"]) == (30, 0)
    assert result.unlabelled_videos == []


@pytest.mark.parametrize("width,left_track,right_track", [(640, 0, None), (150, None, 0)])
def test_left_right_with_one_track_uses_the_frame_width(tmp_path, width, left_track, right_track):
    rows = [(k, 0, 100, 0.1 * k, -0.1 * k) for k in range(5)]
    traces = write_traces(tmp_path / "t.arrow", [video_table("one.mp4", np.arange(5), rows)])
    write_manifest(traces, {"one.mp4": width})
    labels = tmp_path / "labels"
    write_labels(labels, "one_left", [0.0, 0.1, 0.2, 0.3, 0.4], [0.0, -0.1, -0.2, -0.3, -0.4])
    write_labels(labels, "one_right", [0.0, 0.1, 0.2, 0.3, 0.4], [0.0, -0.1, -0.2, -0.3, -0.4])
    result = evaluate(traces, labels)
    for person, track in (("one_left", left_track), ("one_right", right_track)):
        got = result.videos[person]
        assert got["track"] == track
        assert (got["frames"], got["missing"]) == ((5, 0) if track is not None else (0, 5))
    assert result.overall.frames == 5 and result.overall.missing == 5


def test_video_whose_own_name_ends_in_left(tmp_path):
    rows = [(k, 0, 100, 0.1 * k, 0.1 * k) for k in range(4)]
    traces = write_traces(tmp_path / "t.arrow", [video_table("clips/x_left.mp4", np.arange(4), rows)])
    write_labels(tmp_path / "labels", "x_left", [0.0, 0.1, 0.2, 0.3], [0.0, 0.1, 0.2, 0.3])
    result = evaluate(traces, tmp_path / "labels")
    assert result.videos["x_left"]["video"] == "clips/x_left.mp4"
    assert result.videos["x_left"]["track"] == 0
    assert result.videos["x_left"]["valence"] == pytest.approx(1.0, abs=1e-6)


def test_null_predictions_on_a_track_row_are_missing(tmp_path):
    rows = [(k, 0, 100, 0.1 * k, 0.05 * k) for k in range(6)]
    table = video_table("v.mp4", np.arange(6), rows)
    valence = table["valence"].to_pylist()
    valence[2] = None  # the face is there, the model gave no valence
    arousal = table["arousal"].to_pylist()
    arousal[4] = float("nan")  # a NaN (not null) prediction is no prediction either
    table = table.set_column(table.schema.get_field_index("valence"), "valence", pa.array(valence, pa.float32()))
    table = table.set_column(table.schema.get_field_index("arousal"), "arousal", pa.array(arousal, pa.float32()))
    traces = write_traces(tmp_path / "t.arrow", [table])
    lab = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    write_labels(tmp_path / "labels", "v", lab, [0.5 * x for x in lab])
    v = evaluate(traces, tmp_path / "labels").videos["v"]
    assert (v["frames"], v["missing"]) == (4, 2)
    kept = [0, 1, 3, 5]
    assert v["valence"] == pytest.approx(
        ccc_reference([lab[k] for k in kept], [float(np.float32(0.1 * k)) for k in kept]), abs=1e-12
    )


def test_infinite_predictions_are_missing_not_a_crash(tmp_path):
    rows = [(k, 0, 100, 0.1 * k, 0.05 * k) for k in range(5)]
    rows[1] = (1, 0, 100, float("inf"), 0.05)
    rows[3] = (3, 0, 100, 0.3, float("-inf"))
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", np.arange(5), rows)])
    lab = [0.0, 0.1, 0.2, 0.3, 0.4]
    write_labels(tmp_path / "labels", "v", lab, lab)
    v = evaluate(traces, tmp_path / "labels").videos["v"]
    assert (v["frames"], v["missing"]) == (3, 2)
    kept = [0, 2, 4]
    assert v["arousal"] == pytest.approx(
        ccc_reference([lab[k] for k in kept], [float(np.float32(0.05 * k)) for k in kept]), abs=1e-12
    )


def test_negative_source_frames_are_never_joined(tmp_path):
    # Malformed traces: negative source frames must not wrap around to the end of the labels.
    rows = [(0, 0, 100, 0.9, 0.9), (1, 0, 100, 0.1, 0.1), (2, 0, 100, 0.2, 0.2)]
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", [-1, 0, 1], rows)])
    write_labels(tmp_path / "labels", "v", [0.1, 0.2, -0.7], [0.1, 0.2, -0.7])
    v = evaluate(traces, tmp_path / "labels").videos["v"]
    assert (v["frames"], v["missing"]) == (2, 1)


# ---------------------------------------------------------------------------------------------
# evaluate(): several videos, the challenge protocol
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path):
    """Traces of four videos and labels for three of them plus one label file without traces.

    Returns (traces, labels_dir, expected) with expected[label name] = (track, reference join).
    """
    rng = np.random.default_rng(2024)
    tables = []
    expected = {}
    labels = tmp_path / "labels"

    # a: 25 fps scored at 30 fps; 40 source frames in 48 output frames; labels for 45 frames.
    src_a = (np.arange(48) * 25) // 30
    lv, la = rng.uniform(-1, 1, 45), rng.uniform(-1, 1, 45)
    lv[[3, 15]] = INVALID_LABEL
    la[[7, 15]] = INVALID_LABEL
    lv, la = as_written(lv), as_written(la)
    rows = []
    for k in range(48):
        s = src_a[k]
        if not 10 <= k <= 13:  # no face on four output frames
            rows.append((k, 0, 200, np.clip(0.7 * lv[s] + rng.normal(0.3, 0.3), -1, 1), rng.uniform(-1, 1)))
        if 20 <= k < 30:
            rows.append((k, 1, 100, -lv[s], la[s]))  # short track, perfect arousal: not chosen
    tables.append(video_table("sub/a.mp4", src_a, rows))
    write_labels(labels, "a", lv, la)
    expected["a"] = ("sub/a.mp4", 0, reference_join(lv, la, rows, src_a, 0))

    # two: native rate, two people.
    n = 60
    rows = []
    people = {}
    for person, track, x, bias in (("left", 6, 120, -0.4), ("right", 2, 480, 0.5)):
        pv, pa_ = as_written(rng.uniform(-1, 1, n)), as_written(rng.uniform(-1, 1, n))
        pv[50:] = INVALID_LABEL
        people[person] = (track, pv, pa_)
        for k in range(n):
            if person == "left" and k % 7 == 0:
                continue
            rows.append((k, track, x + rng.normal(0, 5), 0.5 * pv[k] + bias, 0.8 * pa_[k] - bias))
        write_labels(labels, f"two_{person}", pv, pa_)
    tables.append(video_table("two.mp4", np.arange(n), rows))
    for person, (track, pv, pa_) in people.items():
        expected[f"two_{person}"] = ("two.mp4", track, reference_join(pv, pa_, rows, np.arange(n), track))

    # c: traces, no labels.
    tables.append(video_table("c.mp4", np.arange(5), [(k, 0, 10, 0.0, 0.0) for k in range(5)]))
    # e: no face at all.
    tables.append(video_table("e.mp4", np.arange(8), None))
    ev, ea = as_written(rng.uniform(-1, 1, 8)), as_written(rng.uniform(-1, 1, 8))
    ev[0] = INVALID_LABEL
    write_labels(labels, "e", ev, ea)
    expected["e"] = ("e.mp4", None, (np.array([]),) * 4 + (7,))
    # d: labels, no traces.
    write_labels(labels, "d", [0.1, 0.2], [0.1, 0.2])

    traces = write_traces(tmp_path / "traces.arrow", tables)
    return traces, labels, expected


def _check_dataset(result, expected):
    assert set(result.videos) == set(expected)
    for name, (video, track, (v_true, v_pred, a_true, a_pred, missing)) in expected.items():
        got = result.videos[name]
        assert got["video"] == video and got["track"] == track, name
        assert got["frames"] == len(v_true) and got["missing"] == missing, name
        if len(v_true):
            assert got["valence"] == pytest.approx(ccc_reference(v_true, v_pred), abs=1e-12), name
            assert got["arousal"] == pytest.approx(ccc_reference(a_true, a_pred), abs=1e-12), name
            assert got["mean"] == pytest.approx((got["valence"] + got["arousal"]) / 2, abs=1e-15)
        else:
            assert got["valence"] is None and got["arousal"] is None and got["mean"] is None


def _reference_scores(expected) -> tuple[dict[str, tuple], tuple]:
    """Per label name (valence, arousal, mean, frames, missing) and the same over all videos,
    from the fixture's reference join and the float64 eq. (1): independent of ``evaluate``."""
    per = {}
    for name, (_, _, (v_true, v_pred, a_true, a_pred, missing)) in expected.items():
        if len(v_true):
            v, a = ccc_reference(v_true, v_pred), ccc_reference(a_true, a_pred)
            per[name] = (v, a, (v + a) / 2, len(v_true), missing)
        else:
            per[name] = (None, None, None, 0, missing)
    parts = [exp[2] for exp in expected.values()]
    cat = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    v_all, a_all = ccc_reference(cat[0], cat[1]), ccc_reference(cat[2], cat[3])
    overall = (v_all, a_all, (v_all + a_all) / 2, sum(len(p[0]) for p in parts), sum(p[4] for p in parts))
    return per, overall


def test_dataset_per_video_and_overall(dataset):
    traces, labels, expected = dataset
    result = evaluate(traces, labels)
    _check_dataset(result, expected)

    # Counts we know by construction.
    a = result.videos["a"]
    # a: 45 labelled frames, 3 invalid (3, 7, 15): 42 valid; source frames 40..44 have no traces;
    # output frames 10..13 show source frames 8, 9, 10, 10: frames 8, 9, 10 have no face.
    assert (a["frames"], a["missing"]) == (42 - 5 - 3, 5 + 3)
    assert result.videos["two_right"]["frames"] == 50
    assert result.videos["two_left"]["frames"] == 50 - len(range(0, 50, 7))
    assert result.videos["e"]["missing"] == 7

    # Overall: CCC over the concatenation of all videos' samples, not the mean of per-video CCCs.
    parts = [exp[2] for exp in expected.values()]
    cat = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    v_all, a_all = ccc_reference(cat[0], cat[1]), ccc_reference(cat[2], cat[3])
    o = result.overall
    assert o.valence == pytest.approx(v_all, abs=1e-12)
    assert o.arousal == pytest.approx(a_all, abs=1e-12)
    assert o.mean == pytest.approx((v_all + a_all) / 2, abs=1e-12)
    assert o.frames == sum(len(p[0]) for p in parts) == a["frames"] + 50 + 50 - 8
    assert o.missing == sum(p[4] for p in parts) == 8 + 0 + 8 + 7
    per_video_v = [s["valence"] for s in result.videos.values() if s["valence"] is not None]
    per_video_a = [s["arousal"] for s in result.videos.values() if s["arousal"] is not None]
    assert abs(o.valence - np.mean(per_video_v)) > 0.02
    assert abs(o.arousal - np.mean(per_video_a)) > 0.02

    assert result.unlabelled_videos == ["c.mp4"]
    assert result.labels_without_traces == ["d (no traces)"]


def test_dataset_json(dataset):
    traces, labels, expected = dataset
    result = run_cli("eval", traces, "--labels", labels, "--json")
    assert result.exit_code == 0, result.output
    assert result.exception is None
    data = json.loads(result.stdout)
    assert {"valence", "arousal", "mean", "frames", "missing", "videos"} <= set(data)
    assert set(data) == {
        "valence",
        "arousal",
        "mean",
        "frames",
        "missing",
        "videos",
        "unlabelled_videos",
        "labels_without_traces",
    }
    per, overall = _reference_scores(expected)
    assert [data[k] for k in ("valence", "arousal", "mean")] == pytest.approx(overall[:3], abs=1e-12)
    assert (data["frames"], data["missing"]) == overall[3:]
    assert set(data["videos"]) == set(per)
    for name, (v, a, mean, frames, missing) in per.items():
        got = data["videos"][name]
        assert got["video"] == expected[name][0] and got["track"] == expected[name][1], name
        assert (got["frames"], got["missing"]) == (frames, missing), name
        for key, want in (("valence", v), ("arousal", a), ("mean", mean)):
            assert got[key] == (None if want is None else pytest.approx(want, abs=1e-12)), (name, key)
    assert set(data["videos"]["a"]) == {"video", "track", "valence", "arousal", "mean", "frames", "missing"}
    assert data["videos"]["e"]["valence"] is None and data["videos"]["e"]["track"] is None
    assert data["unlabelled_videos"] == ["c.mp4"]
    assert data["labels_without_traces"] == ["d (no traces)"]


def test_dataset_text(dataset):
    traces, labels, expected = dataset
    per, overall = _reference_scores(expected)
    result = run_cli("eval", traces, "--labels", labels)
    assert result.exit_code == 0, result.output
    out = result.stdout
    lines = out.splitlines()
    assert lines[0].split() == ["labels", "valence", "arousal", "mean", "frames", "missing"]
    by_name = {line.split()[0]: line.split() for line in lines[1:] if line and not line.startswith(" ")}
    for name in ("a", "two_left", "two_right"):
        v, a, mean, frames, missing = per[name]
        assert by_name[name] == [name, f"{v:.3f}", f"{a:.3f}", f"{mean:.3f}", str(frames), str(missing)]
    assert by_name["e"] == ["e", "-", "-", "-", "0", "7"]
    all_line = next(line for line in lines if line.startswith("ALL (concatenated)"))
    v_all, a_all, mean_all, frames_all, missing_all = overall
    numbers = [f"{v_all:.3f}", f"{a_all:.3f}", f"{mean_all:.3f}", str(frames_all), str(missing_all)]
    assert all_line.split()[2:] == numbers
    assert f"note: {missing_all} valid labelled frames have no prediction" in out
    assert "videos without labels (1): c.mp4" in out
    assert "labels without traces (1): d (no traces)" in out


def test_traces_with_only_null_faces(tmp_path):
    # What affbatch score writes without face and affect models: one row of nulls per frame.
    src = (np.arange(36) * 25) // 30
    traces = write_traces(
        tmp_path / "t.arrow", [video_table("v.mp4", src, None), video_table("w.mp4", np.arange(4), None)]
    )
    write_labels(tmp_path / "labels", "v", [0.1, -5, 0.3] + [0.2] * 27, [0.1, 0.2, 0.3] + [0.2] * 27)
    write_labels(tmp_path / "labels", "w_left", [0.1] * 3, [0.1] * 3)
    result = evaluate(tmp_path / "t.arrow", tmp_path / "labels")
    assert result.overall.valence is None and result.overall.arousal is None and result.overall.mean is None
    assert (result.overall.frames, result.overall.missing) == (0, 29 + 3)
    assert result.videos["v"]["track"] is None and result.videos["w_left"]["track"] is None

    cli = run_cli("eval", traces, "--labels", tmp_path / "labels", "--json")
    assert cli.exit_code == 0, cli.output
    data = json.loads(cli.stdout)
    assert data["valence"] is None and data["arousal"] is None and data["mean"] is None
    assert data["frames"] == 0 and data["missing"] == 32
    assert data["videos"]["v"] == {
        "video": "v.mp4",
        "track": None,
        "valence": None,
        "arousal": None,
        "mean": None,
        "frames": 0,
        "missing": 29,
    }
    text = run_cli("eval", traces, "--labels", tmp_path / "labels")
    assert text.exit_code == 0, text.output
    assert "note: 32 valid labelled frames have no prediction" in text.stdout


def test_undefined_ccc_is_null_not_nan(tmp_path):
    # Constant labels and equal constant predictions: CCC undefined -> null in JSON (valid JSON).
    rows = [(k, 0, 100, 0.25, 0.5 * k) for k in range(4)]
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", np.arange(4), rows)])
    write_labels(tmp_path / "labels", "v", [0.25] * 4, [0.0, 0.5, 1.0, 1.0])
    cli = run_cli("eval", traces, "--labels", tmp_path / "labels", "--json")
    assert cli.exit_code == 0, cli.output
    data = json.loads(cli.stdout)
    assert "NaN" not in cli.stdout
    assert data["videos"]["v"]["valence"] is None and data["valence"] is None and data["mean"] is None
    assert data["arousal"] == pytest.approx(ccc_reference([0.0, 0.5, 1.0, 1.0], [0.0, 0.5, 1.0, 1.5]), abs=1e-12)
    assert data["frames"] == 4


def test_empty_traces_file(tmp_path):
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", np.arange(3), None).slice(0, 0)])
    write_labels(tmp_path / "labels", "v", [0.1], [0.1])
    result = evaluate(traces, tmp_path / "labels")
    assert result.videos == {} and result.unlabelled_videos == []
    assert result.labels_without_traces == ["v (no traces)"]
    assert (result.overall.valence, result.overall.frames, result.overall.missing) == (None, 0, 0)


def test_ambiguous_video_stem(tmp_path):
    tables = [video_table(n, np.arange(3), [(0, 0, 1, 0.1, 0.1)]) for n in ("x/v.mp4", "y/v.mkv")]
    traces = write_traces(tmp_path / "t.arrow", tables)
    write_labels(tmp_path / "labels", "v", [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    result = evaluate(traces, tmp_path / "labels")
    assert result.labels_without_traces == ["v (ambiguous: 2 videos named v)"]
    assert result.unlabelled_videos == ["x/v.mp4", "y/v.mkv"]


def test_manifest_without_width_is_ignored(tmp_path):
    rows = [(k, 0, 100, 0.1 * k, 0.1 * k) for k in range(3)]
    traces = write_traces(tmp_path / "t.arrow", [video_table("v.mp4", np.arange(3), rows)])
    write_table_atomically(pa.table({"video": ["v.mp4"], "status": ["ok"]}), manifest_path(traces))
    write_labels(tmp_path / "labels", "v_left", [0.0, 0.1, 0.2], [0.0, 0.1, 0.2])
    result = evaluate(traces, tmp_path / "labels")
    assert result.videos["v_left"]["track"] == 0  # one track, no width known: taken as the left person


# ---------------------------------------------------------------------------------------------
# Errors: one line, exit status 1, no traceback
# ---------------------------------------------------------------------------------------------


def test_missing_traces_file(tmp_path):
    write_labels(tmp_path / "labels", "v", [0.1], [0.1])
    with pytest.raises(AffbatchError, match="not found"):
        evaluate(tmp_path / "nope.arrow", tmp_path / "labels")
    assert_clean_error(run_cli("eval", tmp_path / "nope.arrow", "--labels", tmp_path / "labels"), "nope.arrow")


@pytest.mark.parametrize(
    "content",
    [b"", b"video,frame\n" * 50, b"ARROW1\x00\x00garbage", b"PAR1" + b"\x00" * 100],
    ids=["empty", "csv", "truncated-arrow", "parquet-like"],
)
def test_non_arrow_traces_file(tmp_path, content):
    bad = tmp_path / "t.arrow"
    bad.write_bytes(content)
    write_labels(tmp_path / "labels", "v", [0.1], [0.1])
    with pytest.raises(AffbatchError, match="not an Arrow traces file"):
        evaluate(bad, tmp_path / "labels")
    assert_clean_error(run_cli("eval", bad, "--labels", tmp_path / "labels"), str(bad), "not an Arrow traces file")


def test_traces_path_is_a_folder(tmp_path):
    write_labels(tmp_path / "labels", "v", [0.1], [0.1])
    assert_clean_error(run_cli("eval", tmp_path, "--labels", tmp_path / "labels"), str(tmp_path))


def test_arrow_file_that_is_not_traces(tmp_path):
    other = tmp_path / "other.arrow"
    write_table_atomically(pa.table({"video": ["v"], "frame": pa.array([0], pa.int32())}), other)
    write_labels(tmp_path / "labels", "v", [0.1], [0.1])
    assert_clean_error(run_cli("eval", other, "--labels", tmp_path / "labels"), "missing columns", "source_frame")


def test_bad_label_file_via_cli(dataset):
    traces, labels, _ = dataset
    bad = labels / "two_left.txt"
    lines = bad.read_text().splitlines()
    lines[5] = "0.1,1.7"
    bad.write_text("\n".join(lines) + "\n")
    assert_clean_error(run_cli("eval", traces, "--labels", labels), f"{bad}:6:")


def test_label_dir_problems_via_cli(dataset, tmp_path):
    traces, labels, _ = dataset
    assert_clean_error(run_cli("eval", traces, "--labels", tmp_path), "no .txt label files", "labels")
    assert_clean_error(run_cli("eval", traces, "--labels", tmp_path / "nowhere"), "not a folder")
    header = labels / "a.txt"
    header.write_text("frame,valence,arousal\n0,0.1,0.1\n")
    assert_clean_error(run_cli("eval", traces, "--labels", labels), f"{header}:1:")


def test_labels_option_required(dataset):
    traces, _, _ = dataset
    result = run_cli("eval", traces)
    assert result.exit_code == 2
