"""``affbatch score`` with faces: RetinaFace, tracks, crops and the expression prior, end to end.

Real faces only (packaged media, see ``face_media``); ground truth comes from where the
generated videos put them.
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

import av
import numpy as np
import pyarrow.compute as pc
import pytest

from affbatch.pipeline import ScoreOptions
from affbatch.run import score_run
from tests.support.arrow import read
from tests.support.face_media import carphone, group_video, portraits


def faces_by_frame(traces):
    rows = defaultdict(list)
    for r in traces.to_pylist():
        if r["track"] is not None:
            rows[r["frame"]].append(r)
    return rows


def test_carphone_one_face_one_track(tmp_path):
    out = tmp_path / "t.arrow"
    summary = score_run([carphone()], out, ScoreOptions())
    assert summary.failed == []
    traces = read(out)
    meta = traces.schema.metadata
    assert meta[b"model"] == b"fer-mini-xception-prior"
    assert meta[b"detector"] == b"retinaface-mobilenet0.25"
    assert len(meta[b"model_sha256"]) == 64 and len(meta[b"detector_sha256"]) == 64
    frames = traces["frame"].to_numpy()
    with_face = np.unique(frames[traces["track"].is_valid().to_numpy(zero_copy_only=False)])
    assert len(with_face) / len(np.unique(frames)) >= 0.95
    assert set(traces["track"].drop_null().to_pylist()) == {0}
    for column in ("valence", "arousal"):
        values = traces[column].drop_null().to_numpy()
        assert np.all((values >= -1) & (values <= 1))
    # The face is in the middle of the 176x144 picture, about 50x60 pixels.
    x1, x2 = traces["x1"].drop_null().to_numpy(), traces["x2"].drop_null().to_numpy()
    assert 30 < np.median(x2 - x1) < 80 and 50 < np.median((x1 + x2) / 2) < 130


@pytest.mark.parametrize(("size", "gap", "people_at_once"), [(220, 120, 2), (100, 22, 5)], ids=["pan", "group"])
def test_group_video_tracks(tmp_path, size, gap, people_at_once):
    path, truth = group_video(tmp_path / "group.mp4", size=size, gap=gap)
    out = tmp_path / "t.arrow"
    assert score_run([path], out, ScoreOptions()).failed == []
    found = faces_by_frame(read(out))
    assert max(len(t) for t in truth) == people_at_once
    hits, visible, ids_of = 0, 0, defaultdict(set)
    for k, people in enumerate(truth):
        for person, x1, y1, x2, y2 in people:
            visible += 1
            inside = [
                r for r in found[k] if x1 <= (r["x1"] + r["x2"]) / 2 <= x2 and y1 <= (r["y1"] + r["y2"]) / 2 <= y2
            ]
            if inside:
                hits += 1
                ids_of[person].update(r["track"] for r in inside)
    assert hits / visible >= 0.95
    assert set(ids_of) == {0, 1, 2, 3, 4}
    switches = sum(len(ids) - 1 for ids in ids_of.values())
    assert switches == 0, dict(ids_of)
    assert len({i for ids in ids_of.values() for i in ids}) == 5
    if people_at_once == 5:  # all in view from the first frame: numbered left to right
        assert {p: ids.pop() for p, ids in ids_of.items()} == {p: p for p in range(5)}


def test_frames_without_a_face_keep_one_null_row(tmp_path):
    """Ten empty frames, then the astronaut: k faces -> k rows, no face -> one row of nulls."""
    face = portraits(200)[0]
    path = tmp_path / "late_face.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for k in range(30):
            image = np.full((240, 320, 3), 90, np.uint8)
            if k >= 10:
                image[20:220, 60:260] = face
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "t.arrow"
    score_run([path], out, ScoreOptions(fps="native"))
    traces = read(out)
    assert traces["frame"].to_pylist() == list(range(30))  # one row each: one face or none
    empty = traces.filter(pc.less(traces["frame"], 10))
    assert empty["track"].null_count == 10 and empty["valence"].null_count == 10
    faces = traces.filter(pc.greater_equal(traces["frame"], 10))
    assert faces["track"].null_count == 0 and set(faces["track"].to_pylist()) == {0}
    # The astronaut smiles: the prior's valence is positive.
    assert np.median(faces["valence"].to_numpy()) > 0.3


def test_sequence_model_from_a_checkpoint_at_30_fps(tmp_path):
    """vggface-gru-attn from a checkpoint folder (an untrained init: the path is what is tested)
    on a 25 fps video: every output frame of the track gets its own value, and source frames
    shown twice at 30 fps appear twice in the track's sequence."""
    import torch

    from affbatch.models.checkpoint import save_checkpoint
    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    torch.manual_seed(0)
    checkpoint = tmp_path / "init"
    save_checkpoint(VGGFaceGRUAttention(), checkpoint, trained=False)
    face = portraits(160)[0]
    path = tmp_path / "face25.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 192, "yuv420p"
        for k in range(50):
            image = np.full((192, 256, 3), 100, np.uint8)
            image[16:176, 40 + k % 5 : 200 + k % 5] = face
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "t.arrow"
    summary = score_run([path], out, ScoreOptions(model=str(checkpoint)))
    assert summary.failed == []
    traces = read(out)
    assert traces.schema.metadata[b"model"] == b"vggface-gru-attn:init"
    assert traces["track"].null_count == 0 and traces["valence"].null_count == 0
    frames = traces["frame"].to_pylist()
    assert frames == list(range(len(frames))) and len(frames) == 60  # 50 frames at 25 fps -> 60
    source = traces["source_frame"].to_numpy()
    assert len(np.unique(source)) == 50
    # A source frame shown twice gets two outputs of the sequence, generally different.
    va = traces["valence"].to_numpy()
    twice = [k for k in range(1, 60) if source[k] == source[k - 1]]
    assert twice and any(va[k] != va[k - 1] for k in twice)
    # tanh outputs of an untrained init: strictly inside (-1, 1), not saturated, and varying.
    assert np.all(np.abs(va) < 0.999) and np.std(va) > 1e-4
