"""Annotations: the median filter, MAIC on traces of known agreement, aggregate's label files."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from affbatch.errors import LabelError, UsageError
from affbatch.evaluation.labels import read_label_file
from training import cli_data
from training.annotations import (
    FILTER_SIZES,
    AggregateOptions,
    aggregate,
    maic,
    median_filter,
    pearson,
    read_raw_traces,
)
from training.labels_io import write_label_file


def reference_median(x: list[float], size: int) -> list[float]:
    """Frame k: the median of the valid values among frames k - size//2 .. k + size - 1 - size//2."""
    out = []
    for k in range(len(x)):
        if math.isnan(x[k]):
            out.append(math.nan)
            continue
        window = [v for v in x[max(0, k - size // 2) : k + size - size // 2] if not math.isnan(v)]
        out.append(statistics.median(window))
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 15, 30, 31])
@pytest.mark.parametrize("length", [0, 1, 2, 7, 61])
def test_median_filter_matches_a_plain_reference(size, length):
    rng = np.random.default_rng(size * 100 + length)
    x = rng.uniform(-1, 1, length)
    x[rng.random(length) < 0.15] = np.nan  # gaps: skipped by the windows, kept as gaps
    got = median_filter(x, size)
    want = np.array(reference_median(x.tolist(), size))
    np.testing.assert_array_equal(got, want)  # exact: same values, same arithmetic


def test_median_filter_by_hand():
    x = [1.0, 5.0, 2.0, 8.0, 3.0]
    assert median_filter(x, 3).tolist() == [3.0, 2.0, 5.0, 3.0, 5.5]  # ends: windows of 2
    # Even size 4: two frames before, one after.
    assert median_filter(x, 4).tolist() == [3.0, 2.0, 3.5, 4.0, 3.0]


def test_median_filter_ends_are_not_pulled_to_zero():
    x = np.full(40, 0.8)
    x[::7] = 0.9
    out = median_filter(x, 30)
    assert out.min() >= 0.8  # zero padding (scipy.signal.medfilt) gives 0.4 at the first frame
    with pytest.raises(ValueError, match="at least 1"):
        median_filter(x, 0)


def test_maic_by_hand_over_the_concatenation_of_videos():
    # Per video, every pair of these two-frame traces correlates at +1 or -1; over the
    # concatenation (0,1,2,3), (0,1,3,2), (3,2,1,0) the correlations are 0.8, -1 and -0.8.
    videos = {"v1": {"a": [0, 1], "b": [0, 1], "c": [3, 2]}, "v2": {"a": [2, 3], "b": [3, 2], "c": [1, 0]}}
    traces = {n: np.concatenate([np.array(videos[v][n], float) for v in ("v1", "v2")]) for n in "abc"}
    assert pearson(traces["a"], traces["b"]) == pytest.approx(0.8)
    result = maic(traces)
    assert result.per_annotator == pytest.approx({"a": -0.1, "b": 0.0, "c": -0.9})
    assert result.maic == pytest.approx(-1 / 3)
    assert np.isnan(np.diag(result.correlations)).all()


def test_maic_skips_frames_one_annotator_lacks():
    a = np.array([0.0, 1.0, 2.0, np.nan, 3.0])
    b = np.array([0.0, 1.0, 3.0, 9.0, 2.0])
    assert maic({"a": a, "b": b}).maic == pytest.approx(0.8)
    with pytest.raises(UsageError, match="at least 2 annotators"):
        maic({"a": a})


def median_variance(size: int) -> float:
    """Variance of the median of ``size`` independent standard normal values (Monte Carlo)."""
    z = np.random.default_rng(1).normal(size=(100_000, size))
    return float(np.var(np.median(z, axis=1)))


def test_maic_of_traces_with_known_agreement():
    # Each annotator = a common signal s + independent white noise of variance sn: any two
    # correlate at rho = var_s / (var_s + sn). s is a sum of sinusoids with whole periods per
    # video (variance exactly sum(a^2)/2) and slow enough (shortest period 600 frames) for a
    # 30-frame median to keep it, so after a filter of size w the noise variance is v_w * sn
    # (v_w: variance of a median of w normals) and MAIC = var_s / (var_s + v_w * sn).
    rng = np.random.default_rng(7)
    videos, frames, annotators = 20, 3000, 4
    amplitudes, cycles = np.array([0.3, 0.2, 0.1]), np.array([1, 3, 5])
    var_s = float((amplitudes**2).sum() / 2)
    noise = var_s * (1 / 0.6 - 1)  # rho = 0.6 without a filter, the paper's level
    k = np.arange(frames)
    signals = [
        (amplitudes[:, None] * np.sin(2 * np.pi * cycles[:, None] * k / frames + rng.uniform(0, 7, (3, 1)))).sum(0)
        for _ in range(videos)
    ]
    raw = {f"a{i}": [s + rng.normal(0, math.sqrt(noise), frames) for s in signals] for i in range(annotators)}
    found = {}
    for size in (1, *FILTER_SIZES):
        traces = {a: np.concatenate([median_filter(x, size) for x in xs]) for a, xs in raw.items()}
        found[size] = maic(traces).maic
        expected = var_s / (var_s + (1.0 if size == 1 else median_variance(size)) * noise)
        # Sampling error of a correlation near 0.6 over 60,000 frames: about 0.003.
        assert found[size] == pytest.approx(expected, abs=0.01), size
    assert found[1] < found[5] < found[15] < found[30]


@pytest.fixture
def raw_folder(tmp_path):
    """Three annotators; video v2 a two-person video; ann3 stops early on v1 and skips a frame."""
    rng = np.random.default_rng(3)
    common = {"v1": np.linspace(-0.5, 0.5, 40), "v2_left": np.linspace(0.2, -0.2, 25), "v2_right": np.zeros(25)}
    truth = {}
    for a in ("ann1", "ann2", "ann3"):
        for name, s in common.items():
            v = np.clip(s + rng.normal(0, 0.1, s.size), -1, 1)
            ar = np.clip(-s + rng.normal(0, 0.1, s.size), -1, 1)
            if a == "ann3" and name == "v1":
                v, ar = v[:36], ar[:36]
                v[10] = np.nan  # written as -5
            truth[a, name] = (v, ar)
            write_label_file(tmp_path / "raw" / a / f"{name}.txt", v, ar)
    return tmp_path / "raw", truth


def test_aggregate_writes_labels_that_read_back(raw_folder, tmp_path):
    raw, truth = raw_folder
    result = aggregate(AggregateOptions(raw=raw, out=tmp_path / "labels", filter_size=5))
    assert result.annotators == ("ann1", "ann2", "ann3")
    assert [row.filter_size for row in result.table] == [1, 5, 15, 30]
    assert any("v1" in w and "ann3 36" in w for w in result.warnings)
    label = read_label_file(tmp_path / "labels" / "v1.txt")
    assert label.valence.size == 40
    want = np.mean(
        [
            median_filter(np.pad(truth[a, "v1"][0], (0, 40 - truth[a, "v1"][0].size), constant_values=np.nan), 5)
            for a in ("ann1", "ann2", "ann3")
        ],
        axis=0,
    )
    valid = label.valid()
    # Invalid where any annotator lacks a value: ann3's gap at frame 10 and its missing end.
    assert set(range(40)) - set(valid.tolist()) == {10, 36, 37, 38, 39}
    np.testing.assert_allclose(label.valence[valid], want[valid], atol=1e-6)
    right = read_label_file(tmp_path / "labels" / "v2_right.txt")
    assert (right.stem, right.person, right.valid().size) == ("v2", "right", 25)
    assert result.frames == 90 and result.valid_frames == 85
    json.dumps(result.to_json())  # plain JSON (NaN-free)


def test_min_annotators_keeps_frames_with_enough_annotators(raw_folder, tmp_path):
    raw, _ = raw_folder
    aggregate(AggregateOptions(raw=raw, out=tmp_path / "labels", filter_size=1, min_annotators=2))
    assert read_label_file(tmp_path / "labels" / "v1.txt").valid().size == 40


def test_raw_layout_errors(tmp_path):
    with pytest.raises(UsageError, match="not a folder"):
        read_raw_traces(tmp_path / "nowhere")
    write_label_file(tmp_path / "flat" / "v1.txt", [0.1], [0.1])
    with pytest.raises(UsageError, match="one folder per annotator"):
        read_raw_traces(tmp_path / "flat")
    write_label_file(tmp_path / "one" / "ann1" / "v1.txt", [0.1], [0.1])
    with pytest.raises(UsageError, match=r"at least 2 \(found ann1\)"):
        read_raw_traces(tmp_path / "one")
    bad = tmp_path / "one" / "ann2" / "v1.txt"
    bad.parent.mkdir()
    bad.write_text("valence,arousal\n0.1,1.5\n")
    with pytest.raises(LabelError, match=r"ann2/v1.txt:2: 1.5 is outside"):
        read_raw_traces(tmp_path / "one")
    with pytest.raises(UsageError, match="--filter 0"):
        AggregateOptions(raw=tmp_path, out=tmp_path / "x", filter_size=0)


def test_aggregate_command(raw_folder, tmp_path):
    raw, _ = raw_folder
    app = typer.Typer()
    cli_data.register(app)
    result = CliRunner().invoke(app, ["aggregate", str(raw), "--out", str(tmp_path / "labels")])
    assert result.exit_code == 0, result.output
    assert "none (mean)" in result.stdout and "30 frames" in result.stdout and "<- labels" in result.stdout
    result = CliRunner().invoke(app, ["aggregate", str(raw), "--out", str(raw / "labels")])
    assert result.exit_code == 2 and "must not be inside the raw traces' folder" in result.output
