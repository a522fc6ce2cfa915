"""The crop store (sharded Arrow, memory-mapped) and ``prepare`` from cropped_aligned frames and from videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from affbatch.errors import UsageError
from affbatch.evaluation.labels import read_label_file
from training import store as st
from training.prepare import PrepareOptions, label_values, labels_for, prepare_cropped_aligned, read_labels
from training.store import CROP_BYTES, CropStore, StoreError, StoreWriter, crops_to_uint8


def random_crops(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def write_labels(path: Path, values) -> Path:
    lines = ["valence,arousal"] + [f"{v},{a}" for v, a in values]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tracks_round_trip_across_shards_and_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "BATCH_ROWS", 16)  # several record batches per shard
    crops = {name: random_crops(n, i) for i, (name, n) in enumerate([("a", 70), ("b", 5), ("c", 131)])}
    labels = np.linspace(-1, 1, 131, dtype=np.float32)
    with StoreWriter(tmp_path / "s", {"source": "test"}, shard_rows=50) as w:
        for i, (name, c) in enumerate(crops.items()):
            n = len(c)
            valence = labels[:n].copy()
            valence[::7] = np.nan  # null labels
            w.add_track(
                {"video": name, "track": i, "label": name, "split": "train" if i else "validation"},
                {
                    "frame": np.arange(n) + 10,
                    "source_frame": np.arange(n),
                    "crop": c,
                    "valence": valence,
                    "arousal": -valence,
                },
            )
    store = CropStore(tmp_path / "s")
    assert store.rows == 206 and [t.rows for t in store.tracks] == [70, 5, 131]
    assert all(s["rows"] <= 50 for s in store.manifest["shards"]) and len(store.manifest["shards"]) == 5
    assert len(store.tracks[0].pieces) == 2  # 70 rows: 50 in shard 0, 20 in shard 1
    for entry, c in zip(store.tracks, crops.values(), strict=True):
        assert np.array_equal(store.crops(entry), c)
        assert np.array_equal(store.crops(entry, 3, entry.rows - 1), c[3:-1])  # any slice, across pieces
        assert np.array_equal(store.column(entry, "frame"), np.arange(entry.rows) + 10)
        lab = store.labels(entry)
        assert np.isnan(lab[::7]).all() and np.isfinite(np.delete(lab, np.s_[::7], axis=0)).all()
        assert entry.labelled == entry.rows - len(range(0, entry.rows, 7))
    assert [t.name for t in store.select("train")] == ["b", "c"]
    with pytest.raises(UsageError, match="no split 'test'"):
        store.select("test")
    # The files are plain Arrow IPC: any reader sees the schema and rows.
    table = pa.ipc.open_file(str(tmp_path / "s" / "shard-00000.arrow")).read_all()
    assert table.schema.field("crop").type == pa.binary(CROP_BYTES) and table.num_rows == 50


def test_unfinished_and_foreign_folders(tmp_path):
    with pytest.raises(StoreError, match="no such crop store"):
        CropStore(tmp_path / "missing")
    with pytest.raises(RuntimeError), StoreWriter(tmp_path / "s", {}) as w:
        w.add_track({"video": "v", "track": 0}, {"frame": [0], "source_frame": [0], "crop": random_crops(1, 0)})
        raise RuntimeError("killed")
    with pytest.raises(StoreError, match="unfinished prepare .*--resume"):
        CropStore(tmp_path / "s")
    with pytest.raises(UsageError, match="unfinished prepare \\(pass --resume to continue it, --overwrite"):
        StoreWriter(tmp_path / "s", {})
    # The exception checkpointed the finished track; a resumed writer starts from it. A track
    # the exception cuts is dropped, and so are the rows it wrote.
    with pytest.raises(RuntimeError), StoreWriter(tmp_path / "s", {}, resume=True) as w:
        assert [t["video"] for t in w.tracks] == ["v"]
        w.begin_track({"video": "cut", "track": 0})
        w.append({"frame": [0], "source_frame": [0], "crop": random_crops(1, 1)})
        raise RuntimeError("killed")
    with StoreWriter(tmp_path / "s", {}, resume=True) as w:
        assert [t["video"] for t in w.tracks] == ["v"]
    assert [t.video for t in CropStore(tmp_path / "s").tracks] == ["v"]
    with pytest.raises(UsageError, match="not empty \\(pass --overwrite"):
        StoreWriter(tmp_path, {})
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(UsageError, match="not a crop store"):
        StoreWriter(other, {}, overwrite=True)
    assert (other / "precious.txt").exists()


def test_crops_to_uint8_inverts_the_scaling():
    u8 = random_crops(3, 1)
    as_float = u8.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1
    assert np.array_equal(crops_to_uint8(as_float), u8)


def test_label_join_and_matching_rules(tmp_path):
    label = read_label_file(
        write_labels(tmp_path / "v.txt", [(0.1, 0.2), (-5, 0.3), (0.5, 0.6), (0.7, -5), (0.9, 1.0)])
    )
    v, a, valid, missing = label_values(label, np.array([0, 1, 2, 2, 7]))
    assert np.allclose(v, [0.1, np.nan, 0.5, 0.5, np.nan], equal_nan=True)
    assert np.allclose(a, [0.2, np.nan, 0.6, 0.6, np.nan], equal_nan=True)
    assert (valid, missing) == (3, 1)  # frame 4 is valid but has no row
    for name in ("x", "x_left", "x_right", "y_left"):
        write_labels(tmp_path / f"{name}.txt", [(0, 0)])
    labels = read_labels(tmp_path)
    assert [(lab.name, p) for lab, p in labels_for("x", labels, {"x"})] == [("x", None)]
    assert [(lab.name, p) for lab, p in labels_for("y", labels, {"y"})] == [("y_left", "left")]
    # A video whose own name ends in _left takes the file named like it (as affbatch eval).
    assert [(lab.name, p) for lab, p in labels_for("y_left", labels, {"y", "y_left"})] == [("y_left", None)]
    assert labels_for("y", labels, {"y", "y_left"}) == []


def _jpeg(path: Path, image: np.ndarray) -> None:
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(image).save(path, quality=95)


def test_prepare_cropped_aligned(tmp_path):
    root = tmp_path / "cropped_aligned"
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (7, 7, 3)), np.ones((16, 16, 1))).astype(np.uint8)  # 112x112 blocks
    for name, frames in {"vid_left": [1, 2, 3, 5], "vid_right": [2, 3], "nolabel": [1], "broken": [1, 2]}.items():
        (root / name).mkdir(parents=True)
        for k in frames:
            _jpeg(root / name / f"{k:05d}.jpg", smooth)
    (root / "broken" / "00002.jpg").write_bytes(b"not a jpeg")
    labels = tmp_path / "labels"
    labels.mkdir()
    write_labels(labels / "vid_left.txt", [(0.1, 0.1), (0.2, 0.2), (-5, -5), (0.4, 0.4), (0.5, 0.5), (0.6, 0.6)])
    write_labels(labels / "vid_right.txt", [(0.0, 0.0)] * 4)
    write_labels(labels / "broken.txt", [(0.0, 0.0)] * 2)
    lines = []
    summary = prepare_cropped_aligned(
        root, PrepareOptions(out=tmp_path / "s", labels=labels, split="train"), lines.append
    )
    assert summary.skipped == ["nolabel"]
    assert [v["status"] for v in summary.videos] == ["failed", "ok", "ok"]
    assert "not a readable JPEG" in summary.videos[0]["error"] and "00002.jpg" in summary.videos[0]["error"]
    store = CropStore(tmp_path / "s")
    left, right = store.tracks
    assert (left.video, left.track, left.label, left.split) == ("vid", 0, "vid_left", "train")
    assert (right.video, right.track, right.label) == ("vid", 1, "vid_right")
    assert np.array_equal(store.column(left, "source_frame"), [0, 1, 2, 4])  # 00001.jpg is frame 0
    assert np.allclose(store.labels(left)[:, 0], [0.1, 0.2, np.nan, 0.5], equal_nan=True)
    assert (left.valid_labels, left.missing) == (5, 2)  # frames 3 and 5 have labels but no picture
    # The 112x112 picture becomes the 96x96 crop, resized (blocks of 16 -> ~13.7 pixels).
    crop = store.crops(left, 0, 1)[0].astype(int)
    assert abs(crop[40, 40] - smooth[47, 47]).max() <= 8
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["settings"]["source"] == "cropped_aligned"


def test_prepare_from_videos_matches_affbatch_score(tmp_path, make_clip):
    """Same detector, tracker and frames as `affbatch score --fps native`; labels joined by source frame."""
    from affbatch.output.traces import read_table
    from affbatch.pipeline import ScoreOptions
    from affbatch.run import score_run
    from tests.support.face_media import carphone
    from training.prepare import prepare_videos
    from training.validate import score_predictions

    video = carphone()
    labels = tmp_path / "labels"
    labels.mkdir()
    values = [(-5, -5) if k % 10 == 3 else (k / 200, -k / 200) for k in range(110)]  # shorter than the video
    write_labels(labels / f"{video.stem}.txt", values)
    bad = tmp_path / "bad" / f"{video.stem}x.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00" * 100)
    write_labels(labels / f"{video.stem}x.txt", values)
    faceless = make_clip("faceless.mp4", frames=20)
    write_labels(labels / "faceless.txt", [(0.5, 0.5)] * 20)
    options = PrepareOptions(out=tmp_path / "s", labels=labels)
    summary = prepare_videos([video, bad, faceless], options, lambda _: None)
    assert [v["status"] for v in summary.videos] == ["ok", "failed", "ok"]
    store = CropStore(tmp_path / "s")
    entry, no_face = store.tracks
    # A label file without a face track: listed with 0 rows, its 20 valid frames missing.
    assert (no_face.label, no_face.track, no_face.rows, no_face.missing) == ("faceless", -1, 0, 20)
    predictions = {entry.index: np.zeros((entry.rows, 2)), no_face.index: np.zeros((0, 2))}
    result = score_predictions(store, store.tracks, predictions)
    assert result.overall.missing == entry.missing + 20 and result.labels["faceless"]["frames"] == 0
    source = store.column(entry, "source_frame")
    assert entry.rows > 100 and np.array_equal(source, np.sort(source))
    lab = store.labels(entry)
    for k, (v, _a) in enumerate(lab):
        want = values[source[k]] if source[k] < 110 else (-5, -5)
        assert (np.isnan(v) and want[0] == -5) or np.isclose(v, want[0])
    traces = read_table(score_run([video], tmp_path / "t.arrow", ScoreOptions(fps="native")).out).to_pydict()
    rows = [k for k, t in enumerate(traces["track"]) if t == entry.track]
    assert [traces["source_frame"][k] for k in rows] == source.tolist()
    assert np.allclose([traces["x1"][k] for k in rows], store.column(entry, "x1"))
