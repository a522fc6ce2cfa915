"""``affbatch eval --smooth``: raw and smoothed CCC side by side, the smoothed one equal to eval
of traces smoothed by hand (a moving mean written out here), on the same tracks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from affbatch.cli import app
from affbatch.evaluation.evaluate import evaluate
from affbatch.output.smoothing import Smoothing
from affbatch.output.traces import frames_table, write_table_atomically
from tests.evaluation.test_eval import ccc_reference, face_rows, write_labels, write_manifest

runner = CliRunner()


def noisy_dataset(tmp_path, seed=0):
    """Two videos at 30 fps: labels are a slow wave, predictions the wave plus frame noise (which
    a moving mean removes); the second has a second, shorter track that must stay unused."""
    rng = np.random.default_rng(seed)
    labels = tmp_path / "labels"
    tables, truth = [], {}
    for name, n in (("a", 300), ("b", 240)):
        t = np.arange(n)
        v = 0.6 * np.sin(2 * np.pi * t / 150 + len(name))
        a = 0.5 * np.cos(2 * np.pi * t / 120)
        write_labels(labels, name, v, a)
        pv = np.clip(v + rng.normal(0, 0.25, n), -1, 1)
        pa_ = np.clip(a + rng.normal(0, 0.25, n), -1, 1)
        rows = [(f, 0, 320, pv[f], pa_[f]) for f in range(n) if not 40 <= f < 50]  # no face in 40..49
        if name == "b":
            rows += [(f, 7, 100, 0.9, 0.9) for f in range(10, 30)]
        tables.append(frames_table(f"{name}.mp4", t, t / 30.0, face_rows(sorted(rows))))
        truth[name] = (v, a, pv, pa_)
    traces = tmp_path / "t.arrow"
    write_table_atomically(pa.concat_tables(tables), traces)
    write_manifest(traces, {"a.mp4": 640, "b.mp4": 640})
    return traces, labels, truth


def smoothed_by_hand(x: np.ndarray, present: np.ndarray, half: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for k in np.flatnonzero(present):
        window = [x[j] for j in range(k - half, k + half + 1) if 0 <= j < len(x) and present[j]]
        out[k] = sum(window) / len(window)
    return out


def test_smoothed_ccc_equals_a_hand_smoothed_join(tmp_path):
    traces, labels, truth = noisy_dataset(tmp_path)
    result = evaluate(traces, labels, Smoothing(0.5))  # half = round(7.5) = 8 frames at 30 fps
    raw = evaluate(traces, labels)
    assert result.overall == raw.overall and result.videos == raw.videos  # raw scores unchanged
    lab_v, lab_a, pred_v, pred_a = [], [], [], []
    for name in ("a", "b"):
        v, a, pv, pa_ = truth[name]
        present = np.ones(len(v), bool)
        present[40:50] = False
        pv32, pa32 = pv.astype(np.float32).astype(np.float64), pa_.astype(np.float32).astype(np.float64)
        sv = smoothed_by_hand(pv32, present, 8).astype(np.float32)
        sa = smoothed_by_hand(pa32, present, 8).astype(np.float32)
        as_written = [float(f"{x:.4f}") for x in v], [float(f"{x:.4f}") for x in a]
        lab_v += list(np.asarray(as_written[0])[present])
        lab_a += list(np.asarray(as_written[1])[present])
        pred_v += list(sv[present])
        pred_a += list(sa[present])
        assert result.smoothed.videos[name]["track"] == 0 == raw.videos[name]["track"]
        assert result.smoothed.videos[name]["missing"] == 10
    s = result.smoothed.overall
    assert s.valence == pytest.approx(ccc_reference(lab_v, pred_v), abs=1e-6)
    assert s.arousal == pytest.approx(ccc_reference(lab_a, pred_a), abs=1e-6)
    # The noise is frame to frame: a moving mean must help here, by a lot.
    assert s.mean > raw.overall.mean + 0.1, (raw.overall.mean, s.mean)
    assert result.smoothing["window_s"] == 0.5 and "moving mean" in result.smoothing["method"]


def test_cli_prints_raw_and_smoothed(tmp_path):
    traces, labels, _ = noisy_dataset(tmp_path)
    out = runner.invoke(app, ["eval", str(traces), "--labels", str(labels), "--smooth", "1"])
    assert out.exit_code == 0, out.output
    text = out.stdout
    assert text.count("ALL (concatenated)") == 2
    assert "smoothed (centred moving mean per track (box filter), window 1 s):" in text
    raw = evaluate(traces, labels)
    smooth = evaluate(traces, labels, Smoothing(1.0)).smoothed
    assert f"ALL: raw mean CCC {raw.overall.mean:.3f}, smoothed {smooth.overall.mean:.3f}" in text


def test_cli_json_has_both(tmp_path):
    traces, labels, _ = noisy_dataset(tmp_path)
    out = runner.invoke(app, ["eval", str(traces), "--labels", str(labels), "--smooth", "1", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["smoothed"]["smoothing"]["window_s"] == 1.0
    assert data["smoothed"]["mean"] > data["mean"]
    assert set(data["smoothed"]["videos"]) == set(data["videos"]) == {"a", "b"}
    plain = json.loads(runner.invoke(app, ["eval", str(traces), "--labels", str(labels), "--json"]).stdout)
    assert "smoothed" not in plain and plain["mean"] == data["mean"]


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "100"])
def test_bad_window_is_a_usage_error(tmp_path, bad):
    traces, labels, _ = noisy_dataset(tmp_path)
    out = runner.invoke(app, ["eval", str(traces), "--labels", str(labels), "--smooth", bad])
    assert out.exit_code == 2 and "--smooth" in out.output and "Traceback" not in out.output
