"""From raw per-annotator traces to final labels, as the paper (Section II-D): each annotator's
trace median-filtered per video, then the mean over annotators; agreement measured by MAIC.

Raw traces: one folder per annotator, each holding that annotator's traces in the Aff-Wild2
label format, the way each annotator exports their own work from the annotation tool::

    RAW/<annotator>/<label name>.txt     e.g. RAW/ann1/video12.txt, RAW/ann1/video7_left.txt

Each file: first line ``valence,arousal``, line k+1 holds the annotator's value at frame k of the
video, ``-5`` where the annotator gave no value (read with :func:`affbatch.evaluation.labels.read_label_file`,
which also checks the range [-1, 1]). The annotator's name is the folder's name; label names
follow the Aff-Wild2 convention (``<video>_left`` / ``<video>_right`` for two people).
Annotators' traces of one video may differ in length (an annotator who stopped early): the
video has as many frames as its longest trace, and frames past an annotator's end are missing
for that annotator (reported as a warning). A video an annotator has no file for is missing for
that annotator throughout (also reported).

Median filter: centred window of ``size`` frames; for an even size, frame k's window is
``k - size//2 .. k + size//2 - 1`` (one frame more before than after, scipy.ndimage's
window); the median of an even number of values is the mean of the two middle ones (ndimage
takes the upper one, which leans towards the larger value).
Windows are clipped to the trace (shrinking at the ends) and skip missing frames: zero padding
(scipy.signal.medfilt) would pull the first and last size/2 frames towards 0, a neutral label the
annotator never gave, and one rule then covers edges and gaps alike. A missing frame stays
missing after filtering: the filter never invents an annotation.

Final label at frame k: the mean of the filtered traces of the annotators who annotated the video,
valid only where all of them have a value (or at least ``min_annotators``); elsewhere -5.

MAIC (per dimension): the Pearson correlation of every pair of annotators over all videos, i.e.
over the concatenation of every video's frames (the paper's "over all videos"; a frame counts
where both annotators have a value), then for each annotator the mean of its correlations with
the others, then the mean over annotators. Concatenation means differences between videos'
levels count as agreement too, which is what a per-frame label over the whole data set needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from affbatch.errors import LabelError, UsageError
from affbatch.evaluation.labels import INVALID_LABEL, read_label_file
from training.labels_io import write_label_file

#: The paper's median filter sizes in frames at 30 fps (0.1, 0.5 and 1 s); 30 was chosen.
FILTER_SIZES = (5, 15, 30)
DEFAULT_FILTER_SIZE = 30
#: A filter of size 1 leaves the trace as it is: the paper's approach (i), the plain mean.
NO_FILTER = 1
DIMENSIONS = ("valence", "arousal")
#: Rows per block of the median filter: bounds memory at CHUNK x size floats.
_CHUNK = 1 << 16


def median_filter(x, size: int) -> np.ndarray:
    """Running median of a 1-D trace (float64, NaN = missing) with shrinking windows at the ends.

    See the module docstring for the window of an even size and the handling of missing frames.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 1:
        raise ValueError(f"median_filter needs a 1-D trace, got shape {x.shape}")
    if int(size) != size or size < 1:
        raise ValueError(f"median filter size {size!r}: must be a whole number of frames, at least 1")
    size = int(size)
    if size == 1 or x.size == 0:
        return x.copy()
    before = size // 2
    after = size - 1 - before
    padded = np.concatenate([np.full(before, np.nan), x, np.full(after, np.nan)])
    out = np.empty_like(x)
    for start in range(0, x.size, _CHUNK):
        stop = min(x.size, start + _CHUNK)
        windows = np.sort(sliding_window_view(padded[start : stop + size - 1], size), axis=1)  # NaN sort last
        count = size - np.count_nonzero(np.isnan(windows), axis=1)
        rows = np.arange(stop - start)
        lo = np.maximum((count - 1) // 2, 0)
        out[start:stop] = 0.5 * (windows[rows, lo] + windows[rows, count // 2])  # all-NaN rows: masked below
    out[np.isnan(x)] = np.nan
    return out


def pearson(x, y) -> float:
    """Pearson correlation over the frames where both are finite; NaN if fewer than 2 or constant."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    both = np.isfinite(x) & np.isfinite(y)
    if np.count_nonzero(both) < 2:
        return float("nan")
    dx = x[both] - x[both].mean()
    dy = y[both] - y[both].mean()
    denominator = np.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    return float(np.dot(dx, dy) / denominator) if denominator > 0 else float("nan")


@dataclass(frozen=True)
class Agreement:
    """MAIC of one dimension: the mean over annotators of their mean correlation with the others."""

    maic: float
    per_annotator: dict[str, float]  # each annotator's mean correlation with the others
    correlations: np.ndarray  # (annotators, annotators) Pearson; NaN on the diagonal and undefined pairs


def maic(traces: Mapping[str, np.ndarray]) -> Agreement:
    """MAIC of aligned traces, ``{annotator: (frames,) float64, NaN = missing}``.

    Pairs without two common frames or with a constant trace have no correlation and are left
    out of the means (an annotator without any defined pair is left out of MAIC).
    """
    names = sorted(traces)
    if len(names) < 2:
        raise UsageError(f"MAIC needs at least 2 annotators, got {len(names)} ({', '.join(names) or 'none'})")
    lengths = {len(traces[n]) for n in names}
    if len(lengths) != 1:
        raise ValueError(f"maic needs traces of equal length, got lengths {sorted(lengths)}")
    r = np.full((len(names), len(names)), np.nan)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            r[i, j] = r[j, i] = pearson(traces[names[i]], traces[names[j]])
    per_annotator = {}
    for i, name in enumerate(names):
        row = r[i][np.isfinite(r[i])]
        per_annotator[name] = float(row.mean()) if row.size else float("nan")
    values = np.array([v for v in per_annotator.values() if np.isfinite(v)])
    return Agreement(float(values.mean()) if values.size else float("nan"), per_annotator, r)


@dataclass(frozen=True)
class RawTraces:
    """Raw annotations of a data set: ``videos[label name][annotator]`` is (frames, 2) float64
    (valence, arousal), NaN where the annotator gave no value, padded to the video's longest trace."""

    folder: Path
    annotators: tuple[str, ...]
    videos: dict[str, dict[str, np.ndarray]]
    warnings: tuple[str, ...] = ()

    @property
    def frames(self) -> int:
        return sum(next(iter(v.values())).shape[0] for v in self.videos.values())


def read_raw_traces(folder: Path) -> RawTraces:
    """Read ``RAW/<annotator>/<label name>.txt`` (see the module docstring).

    Raises:
        UsageError: ``folder`` is not a folder of annotator folders, or has fewer than 2.
        LabelError: a trace file is not in the Aff-Wild2 label format.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder (expected RAW/<annotator>/<label name>.txt)")
    annotator_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in folder.glob("*.txt"))
    if loose:
        raise UsageError(
            f"{folder}: holds trace files directly ({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''});"
            " expected one folder per annotator: RAW/<annotator>/<label name>.txt"
        )
    if len(annotator_dirs) < 2:
        found = ", ".join(p.name for p in annotator_dirs) or "none"
        raise UsageError(
            f"{folder}: needs one folder per annotator, at least 2 (found {found}): RAW/<annotator>/<label name>.txt"
        )
    per_annotator: dict[str, dict[str, np.ndarray]] = {}
    for directory in annotator_dirs:
        files = sorted(directory.glob("*.txt"))
        if not files:
            raise UsageError(f"{directory}: annotator folder without .txt trace files")
        traces = {}
        for path in files:
            label = read_label_file(path)
            values = np.stack([label.valence, label.arousal], axis=1)
            values[values == INVALID_LABEL] = np.nan
            traces[path.stem] = values
        per_annotator[directory.name] = traces
    annotators = tuple(per_annotator)
    warnings = []
    videos: dict[str, dict[str, np.ndarray]] = {}
    for name in sorted({n for traces in per_annotator.values() for n in traces}):
        have = {a: per_annotator[a][name] for a in annotators if name in per_annotator[a]}
        if len(have) < len(annotators):
            absent = [a for a in annotators if a not in have]
            warnings.append(f"{name}: no trace from {', '.join(absent)}; its label is the mean of the others")
        length = max(t.shape[0] for t in have.values())
        short = {a: t.shape[0] for a, t in have.items() if t.shape[0] < length}
        if short:
            detail = ", ".join(f"{a} {n}" for a, n in short.items())
            warnings.append(f"{name}: traces of {length} frames, but {detail}; missing frames past their end")
        videos[name] = {
            a: np.concatenate([t, np.full((length - t.shape[0], 2), np.nan)]) if t.shape[0] < length else t
            for a, t in have.items()
        }
    return RawTraces(folder, annotators, videos, tuple(warnings))


def filter_traces(raw: RawTraces, size: int) -> dict[str, dict[str, np.ndarray]]:
    """Every annotator's trace median-filtered per video and per dimension (size 1: unchanged)."""
    return {
        video: {a: np.stack([median_filter(t[:, d], size) for d in range(2)], axis=1) for a, t in traces.items()}
        for video, traces in raw.videos.items()
    }


def final_labels(filtered: Mapping[str, Mapping[str, np.ndarray]], min_annotators: int | None = None):
    """The mean over annotators per video, ``{label name: (frames, 2)}``, NaN where invalid.

    A frame is valid where every annotator of the video has a value in both dimensions, or with
    ``min_annotators``, where at least that many do (the mean is then over those).
    """
    labels = {}
    for video, traces in filtered.items():
        stack = np.stack(list(traces.values()))  # (annotators, frames, 2)
        present = ~np.isnan(stack).any(axis=2)  # (annotators, frames): both dimensions given
        need = stack.shape[0] if min_annotators is None else min(min_annotators, stack.shape[0])
        count = present.sum(axis=0)
        with np.errstate(invalid="ignore"):
            mean = np.where(present[..., None], stack, 0.0).sum(axis=0) / count[:, None]
        mean[count < need] = np.nan
        labels[video] = mean
    return labels


def maic_over_videos(filtered: Mapping[str, Mapping[str, np.ndarray]], annotators: Sequence[str]):
    """``{dimension: Agreement}`` over the concatenation of all videos (sorted by name)."""
    videos = sorted(filtered)
    result = {}
    for d, dimension in enumerate(DIMENSIONS):
        concatenated = {}
        for a in annotators:
            parts = []
            for v in videos:
                trace = filtered[v].get(a)
                frames = next(iter(filtered[v].values())).shape[0]
                parts.append(trace[:, d] if trace is not None else np.full(frames, np.nan))
            concatenated[a] = np.concatenate(parts) if parts else np.empty(0)
        result[dimension] = maic(concatenated)
    return result


@dataclass(frozen=True)
class MaicRow:
    """One row of the MAIC table: the agreement after a median filter of ``filter_size`` (1: none)."""

    filter_size: int
    valence: Agreement
    arousal: Agreement


def maic_table(raw: RawTraces, sizes: Sequence[int] = (NO_FILTER, *FILTER_SIZES)) -> list[MaicRow]:
    rows = []
    for size in sizes:
        agreement = maic_over_videos(filter_traces(raw, size), raw.annotators)
        rows.append(MaicRow(size, agreement["valence"], agreement["arousal"]))
    return rows


@dataclass(frozen=True)
class AggregateOptions:
    raw: Path  # RAW/<annotator>/<label name>.txt
    out: Path  # folder for the final labels, <label name>.txt
    filter_size: int = DEFAULT_FILTER_SIZE  # 1: no filter (the plain mean)
    min_annotators: int | None = None  # None: every annotator of the video
    table_sizes: tuple[int, ...] = (NO_FILTER, *FILTER_SIZES)

    def __post_init__(self):
        if int(self.filter_size) != self.filter_size or self.filter_size < 1:
            raise UsageError(
                f"--filter {self.filter_size}: must be a number of frames, at least 1"
                f" (1: no filter; the paper's sizes: {', '.join(map(str, FILTER_SIZES))})"
            )
        if self.min_annotators is not None and self.min_annotators < 1:
            raise UsageError(f"--min-annotators {self.min_annotators}: must be at least 1")


@dataclass(frozen=True)
class AggregateResult:
    annotators: tuple[str, ...]
    filter_size: int
    table: list[MaicRow]
    written: list[Path]
    frames: int
    valid_frames: int
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict:
        def num(x):
            return None if not np.isfinite(x) else round(float(x), 6)

        return {
            "annotators": list(self.annotators),
            "filter_size": self.filter_size,
            "maic": [
                {
                    "filter_size": row.filter_size,
                    "valence": num(row.valence.maic),
                    "arousal": num(row.arousal.maic),
                    "per_annotator": {
                        a: {"valence": num(row.valence.per_annotator[a]), "arousal": num(row.arousal.per_annotator[a])}
                        for a in self.annotators
                    },
                }
                for row in self.table
            ],
            "labels": len(self.written),
            "frames": self.frames,
            "valid_frames": self.valid_frames,
            "warnings": list(self.warnings),
        }


def aggregate(options: AggregateOptions) -> AggregateResult:
    """Read the raw traces, compute the MAIC table, write the final labels to ``options.out``."""
    raw = read_raw_traces(options.raw)
    # Label files written inside RAW would be read as another annotator's traces next time.
    if Path(options.out).resolve().is_relative_to(Path(options.raw).resolve()):
        raise UsageError(f"--out {options.out}: must not be inside the raw traces' folder {options.raw}")
    sizes = tuple(dict.fromkeys((*options.table_sizes, options.filter_size)))
    table = maic_table(raw, sizes)
    labels = final_labels(filter_traces(raw, options.filter_size), options.min_annotators)
    written, valid = [], 0
    for name, values in labels.items():
        try:
            written.append(write_label_file(Path(options.out) / f"{name}.txt", values[:, 0], values[:, 1]))
        except OSError as exc:
            raise LabelError(f"{options.out}/{name}.txt: cannot write: {exc.strerror or exc}") from None
        valid += int(np.count_nonzero(~np.isnan(values).any(axis=1)))
    return AggregateResult(raw.annotators, options.filter_size, table, written, raw.frames, valid, raw.warnings)
