"""``affbatch eval``: CCC of traces against Aff-Wild2 labels, with the challenges' protocol.

Labels join traces on ``source_frame``. A plain label file is matched to the video's longest
track; ``_left``/``_right`` files to its two longest tracks, ordered by the median x of their
box centres. A source frame shown in several output frames (30 fps from a slower video) is one
sample: its predictions are averaged. The overall CCC is computed over the concatenation of
the valid frames of all videos, not averaged per video. Valid labelled frames without a
prediction (no face, or traces at another frame rate) are counted and reported, never hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from affbatch.evaluation.labels import LabelFile, read_label_dir, split_person
from affbatch.evaluation.metrics import ccc
from affbatch.output.smoothing import Smoothing, smooth_table
from affbatch.output.traces import manifest_path, read_table, read_traces

NEEDED_COLUMNS = ("video", "source_frame", "track", "x1", "x2", "valence", "arousal")
#: What ``--smooth`` needs besides: the output frame and its time (the frame rate).
SMOOTH_COLUMNS = ("frame", "time_s")


@dataclass
class Scores:
    valence: float | None
    arousal: float | None
    frames: int  # valid labelled frames with a prediction (the samples scored)
    missing: int  # valid labelled frames without a prediction

    @property
    def mean(self) -> float | None:
        if self.valence is None or self.arousal is None:
            return None
        return (self.valence + self.arousal) / 2

    def to_json(self) -> dict:
        return {
            "valence": self.valence,
            "arousal": self.arousal,
            "mean": self.mean,
            "frames": self.frames,
            "missing": self.missing,
        }


@dataclass
class Evaluation:
    overall: Scores
    videos: dict[str, dict] = field(default_factory=dict)  # label name -> scores + match
    unlabelled_videos: list[str] = field(default_factory=list)
    labels_without_traces: list[str] = field(default_factory=list)
    #: With ``--smooth``: the same evaluation of the smoothed traces, and the smoothing's metadata.
    smoothed: Evaluation | None = None
    smoothing: dict | None = None

    def to_json(self) -> dict:
        out = {
            **self.overall.to_json(),
            "videos": self.videos,
            "unlabelled_videos": self.unlabelled_videos,
            "labels_without_traces": self.labels_without_traces,
        }
        if self.smoothed is not None:
            smoothed = self.smoothed
            out["smoothed"] = {"smoothing": self.smoothing, **smoothed.overall.to_json(), "videos": smoothed.videos}
        return out


def scores_of(v_true: np.ndarray, v_pred: np.ndarray, a_true: np.ndarray, a_pred: np.ndarray, missing: int) -> Scores:
    """Both CCCs over the samples given (None where undefined: no samples, or a constant series)."""
    if len(v_true) == 0:
        return Scores(None, None, 0, missing)
    return Scores(_finite(ccc(v_true, v_pred)), _finite(ccc(a_true, a_pred)), len(v_true), missing)


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def render_scores(rows: dict[str, dict], overall: Scores) -> list[str]:
    """The table `affbatch eval` and `affbatch-train evaluate` print: one row per label file
    (``rows``: name -> a ``Scores.to_json()``), then the concatenation over all of them."""

    def f(x):
        return "   -  " if x is None else f"{x:6.3f}"

    lines = [f"{'labels':40} {'valence':>7} {'arousal':>7} {'mean':>7} {'frames':>8} {'missing':>8}"]
    for name, s in [*rows.items(), ("ALL (concatenated)", overall.to_json())]:
        lines.append(
            f"{name:40} {f(s['valence']):>7} {f(s['arousal']):>7} {f(s['mean']):>7} {s['frames']:8d} {s['missing']:8d}"
        )
    return lines


def evaluate(traces_path: Path, labels_dir: Path, smoothing: Smoothing | None = None) -> Evaluation:
    """Scores of the traces against the label files of ``labels_dir``; with ``smoothing``, also
    those of the smoothed traces (``Evaluation.smoothed``), matched to the same tracks."""
    traces_path = Path(traces_path)
    needed = NEEDED_COLUMNS + (SMOOTH_COLUMNS if smoothing is not None else ())
    table = read_traces(traces_path, needed).select(list(needed))
    labels = read_label_dir(labels_dir)
    widths = manifest_widths(traces_path)
    evaluation = evaluate_table(table, labels, widths)
    if smoothing is not None:
        evaluation.smoothed = evaluate_table(smooth_table(table, smoothing), labels, widths)
        evaluation.smoothing = smoothing.metadata()
    return evaluation


def evaluate_table(table: pa.Table, labels: dict[str, list[LabelFile]], widths: dict[str, int]) -> Evaluation:
    """``evaluate`` on traces in memory: ``labels`` as ``read_label_dir`` gives them, ``widths``
    of the videos' frames (``manifest_widths``)."""
    by_video = split_by_video(table)
    stems = video_stems(by_video)

    parts: list[tuple[np.ndarray, ...]] = []
    total_missing = 0
    evaluation = Evaluation(overall=Scores(None, None, 0, 0))
    matched_videos: set[str] = set()
    for _, files in sorted(labels.items()):
        for label in files:
            name, person, why = label_target(label.name, stems)
            if name is None:
                evaluation.labels_without_traces.append(f"{label.name} ({why})")
                continue
            matched_videos.add(name)
            rows = by_video[name]
            track = pick_track(rows, person, widths.get(name))
            v_true, v_pred, a_true, a_pred, missing = _join(label, rows, track)
            scores = scores_of(v_true, v_pred, a_true, a_pred, missing)
            evaluation.videos[label.name] = {"video": name, "track": track, **scores.to_json()}
            parts.append((v_true, v_pred, a_true, a_pred))
            total_missing += missing
    evaluation.unlabelled_videos = sorted(set(by_video) - matched_videos)
    if parts:
        v_true, v_pred, a_true, a_pred = (np.concatenate(c) for c in zip(*parts, strict=True))
        evaluation.overall = scores_of(v_true, v_pred, a_true, a_pred, total_missing)
    return evaluation


def video_stems(videos) -> dict[str, list[str]]:
    """Video names (the traces' ``video`` column) grouped by their file stem."""
    stems: dict[str, list[str]] = {}
    for name in videos:
        stems.setdefault(Path(name).stem, []).append(name)
    return stems


def label_target(label_name: str, stems: dict[str, list[str]]) -> tuple[str | None, str | None, str]:
    """The video and person a label file named ``label_name`` (its stem: ``x``, ``x_left``)
    is matched to: (video, None or "left"/"right", "") or (None, person, why not).

    ``stems``: from ``video_stems``. A video whose own name ends in _left/_right takes a label
    file of its exact name as a plain one. Public because ``affbatch export`` names its files
    by this same rule.
    """
    video_stem, person = split_person(label_name)
    if label_name in stems:  # a video whose own name ends in _left/_right
        video_stem, person = label_name, None
    names = stems.get(video_stem, [])
    if len(names) != 1:
        return None, person, "no traces" if not names else f"ambiguous: {len(names)} videos named {video_stem}"
    return names[0], person, ""


def manifest_widths(traces_path: Path) -> dict[str, int]:
    """The frame width of each video from the manifest next to the traces ({} without one)."""
    try:
        manifest = read_table(manifest_path(traces_path))
    except (OSError, pa.ArrowInvalid):
        return {}
    if not {"video", "width"} <= set(manifest.column_names):  # not a manifest: widths unknown
        return {}
    return {v: w for v, w in zip(manifest["video"].to_pylist(), manifest["width"].to_pylist(), strict=True) if w}


def split_by_video(table: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """Columns of each video's rows as NumPy arrays (NaN / -1 for nulls): ``source_frame``,
    ``track``, ``x1``, ``x2``, ``valence``, ``arousal``. Public because ``affbatch export`` picks
    tracks from the same arrays as eval."""
    encoded = pc.dictionary_encode(table["video"]).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    names = encoded.dictionary.to_pylist()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    cols = {
        "source_frame": table["source_frame"].to_numpy(),
        "track": pc.fill_null(table["track"], -1).to_numpy(),
    }
    if "frame" in table.column_names:
        cols["frame"] = table["frame"].to_numpy()
    for c in ("x1", "x2", "valence", "arousal"):
        cols[c] = pc.fill_null(table[c].cast(pa.float64()), float("nan")).to_numpy()
    return {name: {c: v[order[bounds[i] : bounds[i + 1]]] for c, v in cols.items()} for i, name in enumerate(names)}


def pick_track(rows: dict[str, np.ndarray], person: str | None, width: int | None) -> int | None:
    """The longest track; or, for ``left``/``right``, one of the two longest by median centre x.

    ``rows``: ``track`` (-1 where no face), ``x1``, ``x2`` per trace row. Public because
    ``training``'s crop store matches label files to tracks with this same rule.
    """
    tracks = rows["track"][rows["track"] >= 0]
    if len(tracks) == 0:
        return None
    ids, counts = np.unique(tracks, return_counts=True)
    longest = ids[np.lexsort((ids, -counts))]  # by length, ties to the smaller id
    if person is None:
        return int(longest[0])
    centre = (rows["x1"] + rows["x2"]) / 2
    medians = {int(t): float(np.nanmedian(centre[rows["track"] == t])) for t in longest[:2]}
    if len(medians) == 1:
        ((track, x),) = medians.items()
        side = "left" if width is None or x < width / 2 else "right"
        return track if side == person else None
    left, right = sorted(medians, key=lambda t: (medians[t], t))
    return left if person == "left" else right


def _join(label: LabelFile, rows: dict[str, np.ndarray], track: int | None):
    """Valid labelled frames and the predictions of ``track`` there (averaged per source frame)."""
    valid = label.valid()
    valence, arousal, counts = per_source_frame(rows, track, len(label.valence))
    have = valid[counts[valid] > 0]
    missing = len(valid) - len(have)
    return label.valence[have], valence[have], label.arousal[have], arousal[have], missing


def per_source_frame(rows: dict[str, np.ndarray], track: int | None, n: int):
    """The predictions of ``track`` on source frames 0..n-1: (valence, arousal, count), float64
    means over the output frames showing each source frame (NaN where ``count`` is 0). Public
    because ``affbatch export`` writes per source frame exactly what eval scores."""
    sums_v = np.zeros(n)
    sums_a = np.zeros(n)
    counts = np.zeros(n, np.int64)
    if track is not None:
        # NaN or infinite predictions are no predictions (nulls are NaN here already).
        pick = (rows["track"] == track) & np.isfinite(rows["valence"]) & np.isfinite(rows["arousal"])
        src = rows["source_frame"][pick]
        inside = (src >= 0) & (src < n)  # a negative index would wrap around to the last labels
        src = src[inside]
        np.add.at(sums_v, src, rows["valence"][pick][inside])
        np.add.at(sums_a, src, rows["arousal"][pick][inside])
        np.add.at(counts, src, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums_v / counts, sums_a / counts, counts
