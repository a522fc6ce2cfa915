"""Splits: subject independence, two-person videos kept together, determinism, proportions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from affbatch.errors import LabelError, UsageError
from training import cli_data
from training.labels_io import write_label_file
from training.splits import (
    SPLITS,
    SplitOptions,
    group_videos,
    parse_proportions,
    read_split,
    read_subject_mapping,
    split,
)


def make_mapping(path, videos=558, seed=0):
    """A mapping like Aff-Wild2's: most subjects in one video, some in several, 11 two-person videos
    (a few of whose people also appear elsewhere)."""
    rng = np.random.default_rng(seed)
    rows = ["video,subject,person"]
    subject = 0
    for v in range(videos):
        if v % 50 == 7:  # a two-person video
            rows.append(f"vid{v:03d},s{subject},left")
            rows.append(f"vid{v:03d},s{subject + 1},right")
            subject += 2
        elif rng.random() < 0.15 and subject > 0:  # a subject seen in an earlier video
            rows.append(f"vid{v:03d},s{int(rng.integers(0, subject))},")
        else:
            rows.append(f"vid{v:03d},s{subject},")
            subject += 1
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def mapping(tmp_path):
    return make_mapping(tmp_path / "subjects.csv")


def test_no_subject_in_two_splits_and_people_of_a_video_together(mapping, tmp_path):
    result = split(SplitOptions(mapping=mapping, out=tmp_path / "split.csv"))
    people = read_subject_mapping(mapping)
    splits_of_subject, splits_of_video = defaultdict(set), defaultdict(set)
    for p in people:
        splits_of_subject[p.subject].add(result.split[p.name])
        splits_of_video[p.video].add(result.split[p.name])
    assert all(len(s) == 1 for s in splits_of_subject.values())
    assert all(len(s) == 1 for s in splits_of_video.values())
    assert {"vid007_left", "vid007_right"} <= result.split.keys()
    assert read_split(tmp_path / "split.csv") == result.split


def test_two_people_of_different_subjects_join_their_other_videos(tmp_path):
    path = tmp_path / "m.csv"
    # a: s1; b: s1 and s2 (two people); c: s2; d: s3 alone -> groups {a, b, c} and {d}.
    path.write_text("Subject,Video,Person\ns1,a,\ns1,b,left\ns2,b,right\ns2,c,\ns3,d,\n")
    assert group_videos(read_subject_mapping(path)) == [["a", "b", "c"], ["d"]]


def test_proportions_near_the_target_and_counts(mapping, tmp_path):
    result = split(SplitOptions(mapping=mapping, out=tmp_path / "split.json"))
    videos = {s: result.counts[s].videos for s in SPLITS}
    assert sum(videos.values()) == 558
    for s, target in zip(SPLITS, (350, 70, 138), strict=True):
        assert abs(videos[s] - target) <= 3, videos
    labels = sum(c.labels for c in result.counts.values())
    assert labels == 558 + 12  # 12 two-person videos (v % 50 == 7 for v < 558) add a label each
    document = json.loads((tmp_path / "split.json").read_text())
    assert {s: len(document["splits"][s]) for s in SPLITS} == {s: result.counts[s].labels for s in SPLITS}
    assert read_split(tmp_path / "split.json") == result.split


def test_deterministic_across_runs_and_processes(mapping, tmp_path):
    first = split(SplitOptions(mapping=mapping, out=tmp_path / "a.csv", seed=5))
    # Another interpreter with another hash seed (str hashes differ per process) gives the same.
    code = (
        "import sys; from training.splits import SplitOptions, split;"
        "split(SplitOptions(mapping=sys.argv[1], out=sys.argv[2], seed=5))"
    )
    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONHASHSEED": "123", "PATH": ""}
    subprocess.run([sys.executable, "-c", code, str(mapping), str(tmp_path / "b.csv")], check=True, env=env, cwd=root)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # Row order of the mapping does not matter; the seed does.
    lines = mapping.read_text().splitlines()
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    assert split(SplitOptions(mapping=shuffled, out=tmp_path / "c.csv", seed=5)).split == first.split
    assert split(SplitOptions(mapping=mapping, out=tmp_path / "d.csv", seed=6)).split != first.split


def test_frames_per_split_from_label_files(tmp_path):
    mapping = tmp_path / "m.csv"
    mapping.write_text("video,subject,person\na,s1,\nb,s2,left\nb,s3,right\nc,s4,\nd,s5,\n")
    frames = {"a": 10, "b_left": 20, "b_right": 20, "c": 5, "extra": 3}
    for name, n in frames.items():
        v = np.zeros(n)
        v[0] = np.nan  # one invalid frame per file
        write_label_file(tmp_path / "labels" / f"{name}.txt", v, np.zeros(n))
    result = split(
        SplitOptions(mapping=mapping, out=tmp_path / "s.csv", labels=tmp_path / "labels", proportions=(2, 1, 1))
    )
    assert sum(c.frames for c in result.counts.values()) == 55
    assert sum(c.valid_frames for c in result.counts.values()) == 51
    assert result.missing_labels == ["d"] and result.unmapped_labels == ["extra"]
    assert result.counts[result.split["b_left"]].frames >= 40
    with pytest.raises(LabelError, match="--by frames: no label file .* d"):
        split(SplitOptions(mapping=mapping, out=tmp_path / "s.csv", labels=tmp_path / "labels", by="frames"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("video,person\na,left\n", r"m.csv:1: expected a header with the columns video, subject"),
        ("video,subject,person\na,s1,middle\n", r"m.csv:2: person 'middle': expected left, right or empty"),
        ("video,subject\na,\n", r"m.csv:2: empty video or subject"),
        ("video,subject\na,s1\na,s2\n", r"m.csv:3: a has subject 's2' here and 's1' on line 2"),
        (
            "video,subject,person\na,s1,\na,s2,left\n",
            r"video a has a row without person \(line 2\) and rows for a_left",
        ),
        ("video,subject\n", r"no rows after the header"),
    ],
)
def test_mapping_errors_name_the_file_line_and_value(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(UsageError, match=message):
        read_subject_mapping(tmp_path / "m.csv")


def test_option_errors():
    assert parse_proportions("350,70,138") == pytest.approx((350 / 558, 70 / 558, 138 / 558))
    with pytest.raises(UsageError, match=r"--proportions '1,2': expected three"):
        parse_proportions("1,2")
    with pytest.raises(UsageError, match=r"--out s.txt: the split is written as .csv or .json"):
        SplitOptions(mapping="m.csv", out="s.txt")


def test_split_command(mapping, tmp_path):
    app = typer.Typer()
    cli_data.register(app)
    result = CliRunner().invoke(app, ["split", str(mapping), "--out", str(tmp_path / "s.csv"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "validation" in result.stdout and "subject groups" in result.stdout
    result = CliRunner().invoke(app, ["split", str(mapping), "--out", str(tmp_path / "s.csv"), "--by", "frames"])
    assert result.exit_code == 2 and "--by frames needs --labels" in result.output
