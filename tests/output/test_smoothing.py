"""``--smooth``: the centred moving mean per track, checked against sums written out by hand on
traces built frame by frame (gaps, two tracks in one video, two videos, native rates)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from affbatch.errors import UsageError
from affbatch.output.smoothing import DEFAULT_WINDOW_S, Smoothing, frame_rate, moving_mean, smooth_table
from affbatch.output.traces import frames_table


def faces(rows):
    """frames_table's face columns from (frame, track, valence, arousal) tuples."""
    frame, track, v, a = (np.asarray(c) for c in zip(*rows, strict=True))
    n = len(frame)
    return {
        "frame": frame.astype(np.int64),
        "track": track.astype(np.int32),
        "x1": np.full(n, 10, np.float32),
        "y1": np.full(n, 10, np.float32),
        "x2": np.full(n, 50, np.float32),
        "y2": np.full(n, 50, np.float32),
        "det_score": np.full(n, 0.9, np.float32),
        "valence": np.asarray(v, np.float32),
        "arousal": np.asarray(a, np.float32),
    }


def table(video, n, rows, fps=30.0):
    return frames_table(video, np.arange(n), np.arange(n) / fps, faces(rows) if rows else None)


def values(t: pa.Table, video: str, track: int, column: str) -> dict[int, float]:
    d = t.to_pydict()
    return {
        f: x
        for v, f, tr, x in zip(d["video"], d["frame"], d["track"], d[column], strict=True)
        if v == video and tr == track
    }


def test_window_in_frames_at_the_traces_rate():
    s = Smoothing(1.0)
    assert s.half_frames(30) == 15  # 31 frames at 30 fps
    assert s.half_frames(25) == 12  # 12.5 rounds to even: 25 frames
    assert Smoothing(0.2).half_frames(30) == 3
    assert DEFAULT_WINDOW_S == 1.0


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 61])
def test_bad_window_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="--smooth"):
        Smoothing(bad)


def test_moving_mean_by_hand_with_a_gap():
    # Frames 0-4, then a gap of 5 frames (5..9), then 10-12; half = 2 (a 5-frame window).
    frame = np.array([0, 1, 2, 3, 4, 10, 11, 12])
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
    got = moving_mean(frame, x, 2)
    expected = [
        (1 + 2 + 4) / 3,  # frame 0: 0..2
        (1 + 2 + 4 + 8) / 4,  # frame 1: 0..3
        (1 + 2 + 4 + 8 + 16) / 5,
        (2 + 4 + 8 + 16) / 4,  # frame 3: 1..5, 5 is in the gap
        (4 + 8 + 16) / 3,  # frame 4: 2..6
        (32 + 64 + 128) / 3,  # frame 10: 8..12, nothing from before the gap
        (32 + 64 + 128) / 3,
        (32 + 64 + 128) / 3,
    ]
    assert got.tolist() == expected


def test_a_short_gap_is_bridged_within_the_window():
    # half = 3: frame 2 and frame 5 are 3 apart, so each sees the other across a 2-frame gap.
    got = moving_mean(np.array([0, 1, 2, 5, 6]), np.array([0.0, 0.0, 0.0, 1.0, 1.0]), 3)
    assert got.tolist() == [0.0, 0.0, 1 / 4, 2 / 3, 1.0]  # frame 5: frames 2, 5, 6; frame 6: 5, 6


def test_two_columns_and_half_zero_is_the_identity():
    x = np.array([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]])
    assert np.array_equal(moving_mean(np.array([0, 1, 2]), x, 0), x)
    got = moving_mean(np.array([0, 1, 2]), x, 1)
    assert got[1].tolist() == pytest.approx(x.mean(axis=0).tolist(), abs=1e-15)


def test_frames_must_ascend():
    with pytest.raises(ValueError, match="ascending"):
        moving_mean(np.array([0, 2, 1]), np.zeros(3), 1)


def test_smooth_table_per_track_and_video_never_across_them():
    # One video with two people (tracks 0 and 1 in the same frames, very different values) and
    # a gap in track 0; a second video whose values must not leak into the first.
    rows = []
    for f in range(12):
        if f not in (5, 6, 7, 8, 9):  # track 0 absent for 5 frames
            rows.append((f, 0, f / 10, -f / 10))
        rows.append((f, 1, 0.9, 0.8))
    a = table("a.mp4", 12, rows, fps=10.0)  # 10 fps: a 0.4 s window is half = 2 frames
    b = table("b.mp4", 12, [(f, 0, -1.0, 1.0) for f in range(10)], fps=10.0)  # no face in 10, 11
    t = pa.concat_tables([a, b])
    s = smooth_table(t, Smoothing(0.4))
    assert s.schema == t.schema and s.num_rows == t.num_rows
    assert s["frame"].equals(t["frame"]) and s["track"].equals(t["track"])  # row order kept
    got = values(s, "a.mp4", 0, "valence")
    raw = {f: f / 10 for f in range(12) if f not in range(5, 10)}
    for f, x in got.items():
        window = [raw[g] for g in range(f - 2, f + 3) if g in raw]
        assert x == pytest.approx(np.float32(np.mean([np.float32(w) for w in window])), abs=1e-7), f
    assert set(got) == set(raw)  # no value appears in the gap
    assert got[4] == pytest.approx(np.mean([0.2, 0.3, 0.4]), abs=1e-7)  # frames 10, 11 are beyond
    assert set(values(s, "a.mp4", 1, "valence").values()) == {float(np.float32(0.9))}  # track 0 never mixed in
    assert set(values(s, "b.mp4", 0, "arousal").values()) == {1.0}
    # Frames without a face stay rows with nulls.
    d = s.to_pydict()
    empty = [i for i, tr in enumerate(d["track"]) if tr is None]
    assert empty and all(d["valence"][i] is None for i in empty)


def test_a_null_prediction_on_a_face_row_stays_null_and_is_not_counted():
    rows = [(0, 0, 0.0, 0.0), (1, 0, float("nan"), 0.5), (2, 0, 1.0, 1.0)]
    s = smooth_table(table("v.mp4", 3, rows), Smoothing(0.1))  # half = round(1.5) = 2
    assert s["valence"].to_pylist() == [pytest.approx(0.5), None, pytest.approx(0.5)]


def test_frame_rate_of_native_traces():
    assert frame_rate(np.arange(10) / 25.0, np.arange(10)) == pytest.approx(25.0)
    # Two faces in a frame repeat its time: the rate is per frame, not per row.
    assert frame_rate(np.array([0, 0, 0.04, 0.08]), np.array([0, 0, 1, 2])) == pytest.approx(25.0)
    assert frame_rate(np.array([0.0]), np.array([0])) is None


def test_native_rate_sets_the_window():
    # At 25 fps one second is half = 12: frame 0 averages frames 0..12.
    rows = [(f, 0, float(f % 2), 0.0) for f in range(40)]
    s = smooth_table(table("v.mp4", 40, rows, fps=25.0), Smoothing(1.0))
    assert s["valence"][0].as_py() == pytest.approx(np.mean([f % 2 for f in range(13)]), abs=1e-7)
