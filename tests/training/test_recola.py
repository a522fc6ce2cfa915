"""RECOLA: AVEC gold-standard ARFF files (generated here) aligned to video frames."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from affbatch.errors import LabelError, UsageError
from affbatch.evaluation.labels import read_label_file
from training import cli_data
from training.recola import RecolaOptions, align, convert, read_arff, read_gold_standard


def arff_text(values, name="train_1", relation="GOLDSTANDARD_AROUSAL", period=0.04, extra=None) -> str:
    """An AVEC 2016 gold-standard file: Instance_name, frameTime, GoldStandard (+ ``extra`` columns)."""
    extra = extra or {}
    lines = [
        "% generated for the tests",
        f"@relation {relation}",
        "",
        "@attribute Instance_name string",
        "@attribute frameTime numeric",
        "@attribute GoldStandard numeric",
        *(f"@attribute {k} numeric" for k in extra),
        "",
        "@data",
        "",
    ]
    for i, v in enumerate(values):
        cells = [f"'{name}'", f"{i * period:.2f}", "?" if v is None else repr(v)]
        cells += [repr(column[i]) for column in extra.values()]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


@pytest.fixture
def gold(tmp_path):
    """train_1: valence a rising ramp, arousal a falling one, 7501 samples (300 s) as AVEC 2016."""
    t = np.arange(7501) * 0.04
    for dimension, values in (("valence", -0.5 + t / 600), ("arousal", 0.5 - t / 600)):
        folder = tmp_path / "gold" / dimension
        folder.mkdir(parents=True)
        (folder / "train_1.arff").write_text(arff_text(values.round(6).tolist()))
    return tmp_path / "gold"


def test_read_arff_header_data_and_missing_values(tmp_path):
    path = tmp_path / "x.arff"
    path.write_text(
        "% a comment\n@RELATION 'gold standard'\n@ATTRIBUTE 'Instance name' STRING\n@attribute frameTime REAL\n"
        "@attribute rating numeric\n@DATA\n'dev, 1',0.00,0.25\n\"dev, 1\",0.04,?\n% between rows\n'dev, 1',0.08,-0.5\n"
    )
    arff = read_arff(path)
    assert arff.relation == "gold standard"
    assert arff.attributes == [("Instance name", "string"), ("frameTime", "real"), ("rating", "numeric")]
    assert arff.columns["Instance name"] == ["dev, 1"] * 3
    np.testing.assert_array_equal(arff.columns["rating"], [0.25, np.nan, -0.5])


def test_frames_at_25_fps_are_the_samples_and_at_30_fps_interpolated(gold):
    rating = read_gold_standard(gold / "valence" / "train_1.arff")
    at25 = align(rating, 25)
    assert at25.size == 7501
    np.testing.assert_array_equal(at25, rating.values)
    at30 = align(rating, 30)
    assert at30.size == 9001  # frames at k/30 s up to 300 s + half a sample period
    k = np.arange(9001)
    np.testing.assert_allclose(at30, -0.5 + k / 30 / 600, atol=2e-6)  # linear in time, as the ramp
    ntsc = align(rating, Fraction(30000, 1001), frames=10)
    np.testing.assert_allclose(ntsc, -0.5 + np.arange(10) * 1001 / 30000 / 600, atol=2e-6)


def test_missing_ratings_and_frames_outside_the_rated_span(tmp_path):
    path = tmp_path / "x.arff"
    path.write_text(arff_text([0.0, 0.4, None, 0.8, 0.8]))
    rating = read_gold_standard(path)
    # Frame times 0, 1/30, ... 0.2 s: samples at 0, 0.04, (0.08 missing), 0.12, 0.16.
    out = align(rating, 30, frames=8)
    assert out[0] == 0.0 and out[1] == pytest.approx(0.4 * (1 / 30) / 0.04)
    assert np.isnan(out[2:4]).all()  # 0.067 s and 0.1 s lie next to the missing sample
    assert out[4] == pytest.approx(0.8) and out[5] == 0.8  # 0.133 s; 0.167 s: within 20 ms of the end
    assert np.isnan(out[6:]).all()  # 0.2 s and later: beyond the rated span
    assert align(rating, 25).size == 5


def test_convert_writes_aff_wild2_labels(gold, tmp_path):
    result = convert(RecolaOptions(gold=gold, out=tmp_path / "labels", fps=30))
    label = read_label_file(tmp_path / "labels" / "train_1.txt")
    assert (label.valence.size, result.frames, result.valid_frames, result.clipped) == (9001, 9001, 9001, 0)
    k = np.arange(9001)
    np.testing.assert_allclose(label.valence, -0.5 + k / 30 / 600, atol=2e-6)
    np.testing.assert_allclose(label.arousal, 0.5 - k / 30 / 600, atol=2e-6)  # not swapped
    convert(RecolaOptions(gold=gold, out=tmp_path / "long", fps="25", frames=7600))
    long = read_label_file(tmp_path / "long" / "train_1.txt")
    assert long.valence.size == 7600 and long.valid().size == 7501


def test_out_of_range_ratings_are_clipped_and_counted(tmp_path):
    for dimension in ("valence", "arousal"):
        (tmp_path / "gold" / dimension).mkdir(parents=True)
        (tmp_path / "gold" / dimension / "dev_2.arff").write_text(arff_text([0.5, 1.2, 0.9], name="dev_2"))
    result = convert(RecolaOptions(gold=tmp_path / "gold", out=tmp_path / "labels", fps=25))
    assert result.clipped == 2
    assert read_label_file(tmp_path / "labels" / "dev_2.txt").valence.tolist() == [0.5, 1.0, 0.9]


def test_several_rating_columns_need_a_choice(tmp_path):
    path = tmp_path / "x.arff"
    path.write_text(arff_text([0.1, 0.2], extra={"FM1": [0.3, 0.4]}))
    with pytest.raises(UsageError, match=r"2 rating attributes \(GoldStandard, FM1\); name one with --column"):
        read_gold_standard(path)
    assert read_gold_standard(path, column="FM1").values.tolist() == [0.3, 0.4]
    with pytest.raises(UsageError, match=r"--column 'FM9'.*it has GoldStandard, FM1"):
        read_gold_standard(path, column="FM9")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@relation r\n@attribute frameTime numeric\n", r"x.arff: not an ARFF file: no @data"),
        (
            "@relation r\n@attribute frameTime numeric\n@attribute g numeric\n@data\n0.0\n",
            r"x.arff:5: 1 values, the header declares 2",
        ),
        (
            "@relation r\n@attribute frameTime numeric\n@attribute g numeric\n@data\n0.0,high\n",
            r"x.arff:5: g 'high' is not a number",
        ),
        ("@relation r\n@attribute frameTime numeric\n@attribute g numeric\n@data\n{0 1.0}\n", r"x.arff:5: sparse ARFF"),
        (
            "@relation r\n@attribute time numeric\n@attribute g numeric\n@data\n0.0,0.1\n",
            r"no numeric frameTime attribute",
        ),
        (
            "@relation r\n@attribute frameTime numeric\n@attribute g numeric\n@data\n0.04,0.1\n0.04,0.2\n",
            r"data row 2: frameTime 0.04 .*not after",
        ),
        ("@relation r\nfoo\n", r"x.arff:2: expected @relation, @attribute or @data"),
    ],
)
def test_arff_errors_name_the_file_line_and_value(tmp_path, text, message):
    (tmp_path / "x.arff").write_text(text)
    with pytest.raises(LabelError, match=message):
        read_gold_standard(tmp_path / "x.arff")


def test_layout_errors(gold, tmp_path):
    with pytest.raises(UsageError, match="no valence/ folder; expected the AVEC layout"):
        convert(RecolaOptions(gold=tmp_path, out=tmp_path / "o", fps=25))
    (gold / "valence" / "dev_9.arff").write_text(arff_text([0.1], name="dev_9"))
    with pytest.raises(UsageError, match=r"1 recordings have only one dimension \(dev_9\)"):
        convert(RecolaOptions(gold=gold, out=tmp_path / "o", fps=25))
    with pytest.raises(UsageError, match="--fps 0: expected a positive frame rate"):
        RecolaOptions(gold=gold, out=tmp_path / "o", fps=0)


def test_recola_command(gold, tmp_path):
    app = typer.Typer()
    cli_data.register(app)
    result = CliRunner().invoke(app, ["recola", str(gold), "--out", str(tmp_path / "labels"), "--fps", "30000/1001"])
    assert result.exit_code == 0, result.output
    assert read_label_file(tmp_path / "labels" / "train_1.txt").valence.size == 8992  # floor(300.02 s x 29.97 fps) + 1
    result = CliRunner().invoke(app, ["recola", str(gold), "--out", str(tmp_path / "labels"), "--fps", "fast"])
    assert result.exit_code == 2 and "--fps 'fast'" in result.output
