"""RECOLA's AVEC gold standards as Aff-Wild2 label files, so one pipeline trains on both.

Input: the AVEC 2016 layout, ``GOLD/arousal/<name>.arff`` and ``GOLD/valence/<name>.arff``
(``ratings_gold_standard`` in the AVEC 2016 package), one ARFF file per recording and dimension,
with one rating every 40 ms::

    @relation GOLDSTANDARD
    @attribute Instance_name string
    @attribute frameTime numeric
    @attribute GoldStandard numeric
    @data
    'train_1',0.00,0.0123
    'train_1',0.04,0.0131

The time column is ``frameTime`` (seconds); the rating is the one numeric attribute besides it,
or the one named with ``column`` when there are several (e.g. ``FM1`` in the individual ratings).

Alignment: video frame k of a video at F fps is at time k / F s (the time ``affbatch score``
gives frame k). Its label is the rating **linearly interpolated** between the two 40 ms samples
around that time: the gold standard is a continuous trace sampled at 25 Hz, so interpolation is
exact at the sample times (at 25 fps every frame is a sample) and, at 30 fps, does not repeat
one sample in every sixth frame the way the nearest sample would. Frames within half a sample
period outside the rated span take the first / last rating; frames further out, and frames next
to a missing rating (``?``), are invalid (-5). Ratings outside [-1, 1] are clipped to it, and
counted. By default the labels cover the rated span (k / F up to the last sample time plus half a
period); ``frames`` sets the count instead (e.g. the video's frame count).

Output: ``OUT/<name>.txt`` in the Aff-Wild2 label format, named like the ARFF files (which are
named like RECOLA's videos, ``train_1`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from affbatch.errors import LabelError, UsageError
from training.labels_io import write_label_file

#: The AVEC gold standards hold one rating per 40 ms (25 Hz).
SAMPLE_PERIOD_S = 0.04
DIMENSIONS = ("valence", "arousal")
TIME_ATTRIBUTE = "frametime"
NUMERIC_TYPES = ("numeric", "real", "integer")


@dataclass(frozen=True)
class Arff:
    """A dense ARFF file: ``columns[name]`` is float64 (NaN for ``?``) for numeric attributes,
    a list of strings (None for ``?``) for the others."""

    path: Path
    relation: str
    attributes: list[tuple[str, str]]  # (name, type as written, lower case)
    columns: dict[str, object]


def _split(line: str, path: Path, lineno: int) -> list[str | None]:
    """Comma-separated values; ``'...'`` or ``"..."`` quote (with backslash escapes); ``?`` is None."""
    values: list[str | None] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i < n and line[i] in "'\"":
            quote, i, chars = line[i], i + 1, []
            while i < n and line[i] != quote:
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(line[i])
                i += 1
            if i >= n:
                raise LabelError(f"{path}:{lineno}: unterminated quote in {line!r}")
            i += 1
            value: str | None = "".join(chars)
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] != ",":
                raise LabelError(f"{path}:{lineno}: text after a quoted value in {line!r}")
        else:
            end = line.find(",", i)
            end = n if end < 0 else end
            raw = line[i:end].strip()
            value = None if raw == "?" else raw
            i = end
        values.append(value)
        if i >= n:
            return values
        i += 1  # the comma


def read_arff(path: Path) -> Arff:
    """Read a dense ARFF file (``@relation``, ``@attribute``, ``@data``; ``%`` comments).

    Raises:
        LabelError: the file cannot be read, is sparse, or does not follow its own header.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    relation, attributes, data_at = None, [], None
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("%"):
            continue
        keyword = text.split(None, 1)[0].lower()
        if keyword == "@relation":
            relation = (_split(text[len("@relation") :], path, lineno)[0] or "").strip()
        elif keyword == "@attribute":
            rest = text[len("@attribute") :].strip()
            if rest[:1] in "'\"":  # a quoted name may hold spaces
                close = rest.find(rest[0], 1)
                if close < 0:
                    raise LabelError(f"{path}:{lineno}: unterminated quoted attribute name in {line!r}")
                name, kind = rest[1:close], rest[close + 1 :].strip()
            else:
                name, _, kind = rest.partition(" ")
                kind = kind.strip()
            if not name or not kind:
                raise LabelError(f"{path}:{lineno}: expected '@attribute <name> <type>', got {line!r}")
            attributes.append((name, kind.lower()))
        elif keyword == "@data":
            data_at = lineno
            break
        else:
            raise LabelError(f"{path}:{lineno}: expected @relation, @attribute or @data, got {line!r}")
    if relation is None or not attributes or data_at is None:
        missing = [k for k, v in (("@relation", relation), ("@attribute", attributes), ("@data", data_at)) if not v]
        raise LabelError(f"{path}: not an ARFF file: no {', '.join(missing)} line")
    rows = []
    for lineno, line in enumerate(lines[data_at:], start=data_at + 1):
        text = line.strip()
        if not text or text.startswith("%"):
            continue
        if text.startswith("{"):
            raise LabelError(f"{path}:{lineno}: sparse ARFF data is not supported (expected one value per attribute)")
        values = _split(text, path, lineno)
        if len(values) != len(attributes):
            raise LabelError(
                f"{path}:{lineno}: {len(values)} values, the header declares {len(attributes)} attributes"
                f" ({', '.join(a for a, _ in attributes)})"
            )
        rows.append((lineno, values))
    columns: dict[str, object] = {}
    for j, (name, kind) in enumerate(attributes):
        if kind in NUMERIC_TYPES:
            column = np.empty(len(rows), np.float64)
            for r, (lineno, values) in enumerate(rows):
                try:
                    column[r] = np.nan if values[j] is None else float(values[j])
                except ValueError:
                    raise LabelError(f"{path}:{lineno}: {name} {values[j]!r} is not a number") from None
            columns[name] = column
        else:
            columns[name] = [values[j] for _, values in rows]
    return Arff(path, relation, attributes, columns)


@dataclass(frozen=True)
class Rating:
    """One gold-standard trace: sample times (s, increasing) and ratings (NaN where missing)."""

    path: Path
    times: np.ndarray
    values: np.ndarray
    column: str


def read_gold_standard(path: Path, column: str | None = None) -> Rating:
    """The time and rating columns of an AVEC gold-standard ARFF file (see the module docstring)."""
    arff = read_arff(path)
    numeric = [a for a, kind in arff.attributes if kind in NUMERIC_TYPES]
    time = next((a for a in numeric if a.lower() == TIME_ATTRIBUTE), None)
    if time is None:
        raise LabelError(
            f"{path}: no numeric frameTime attribute (the sample times); attributes:"
            f" {', '.join(f'{a} {k}' for a, k in arff.attributes)}"
        )
    ratings = [a for a in numeric if a != time]
    if column is not None:
        if column not in ratings:
            raise UsageError(f"--column {column!r}: {path} has no such numeric attribute; it has {', '.join(ratings)}")
    elif len(ratings) == 1:
        column = ratings[0]
    else:
        raise UsageError(
            f"{path}: {len(ratings)} rating attributes ({', '.join(ratings) or 'none'}); name one with --column"
        )
    times = arff.columns[time]
    if times.size == 0:
        raise LabelError(f"{path}: no data rows")
    if not np.isfinite(times).all() or (np.diff(times) <= 0).any():
        k = int(np.flatnonzero(~np.isfinite(times) | np.r_[False, np.diff(times) <= 0])[0])
        raise LabelError(f"{path}: data row {k + 1}: frameTime {times[k]} is missing or not after the previous one")
    return Rating(Path(path), times, arff.columns[column], column)


def align(rating: Rating, fps, frames: int | None = None) -> np.ndarray:
    """Ratings at the times k / fps of video frames k (float64, NaN where invalid)."""
    fps = fps if isinstance(fps, Fraction) else Fraction(str(fps))  # str: 29.97 -> 2997/100, not binary
    if fps <= 0:
        raise UsageError(f"--fps {float(fps)}: must be positive")
    t, v = rating.times, rating.values
    half = (float(np.median(np.diff(t))) if t.size > 1 else SAMPLE_PERIOD_S) / 2
    if frames is None:
        # Frames whose time is at most the last sample plus half a period (1e-9: float round-off).
        frames = max(0, int(np.floor((t[-1] + half) * float(fps) + 1e-9)) + 1)
    k = np.arange(frames, dtype=np.float64)
    at = k * fps.denominator / fps.numerator  # k / F without the error of a rounded 1/F
    i = np.clip(np.searchsorted(t, at, side="right") - 1, 0, t.size - 1)
    j = np.minimum(i + 1, t.size - 1)
    span = t[j] - t[i]
    w = np.where(span > 0, np.clip((at - t[i]) / np.where(span > 0, span, 1.0), 0.0, 1.0), 0.0)
    # A weight of exactly 0 or 1 takes one sample alone, so that a missing neighbour does not
    # spoil a frame that falls on a valid sample.
    out = np.where(w == 0, v[i], np.where(w == 1, v[j], (1 - w) * v[i] + w * v[j]))
    out[(at < t[0] - half) | (at > t[-1] + half)] = np.nan
    return out


@dataclass(frozen=True)
class RecolaOptions:
    gold: Path  # GOLD/arousal/*.arff and GOLD/valence/*.arff
    out: Path  # folder for <name>.txt
    fps: Fraction  # the frame rate of the videos the labels index
    frames: int | None = None  # labels per file; None: the rated span
    column: str | None = None  # the rating attribute, when a file has several

    def __post_init__(self):
        try:
            fps = Fraction(str(self.fps)) if not isinstance(self.fps, Fraction) else self.fps
        except (ValueError, ZeroDivisionError):
            fps = Fraction(0)
        if fps <= 0:
            raise UsageError(f"--fps {self.fps}: expected a positive frame rate, e.g. 25, 30 or 30000/1001")
        object.__setattr__(self, "fps", fps)
        if self.frames is not None and self.frames < 0:
            raise UsageError(f"--frames {self.frames}: must be at least 0")


@dataclass(frozen=True)
class RecolaResult:
    written: list[Path]
    frames: int
    valid_frames: int
    clipped: int  # ratings outside [-1, 1], clipped to it

    def to_json(self) -> dict:
        return {
            "labels": len(self.written),
            "frames": self.frames,
            "valid_frames": self.valid_frames,
            "clipped": self.clipped,
        }


def convert(options: RecolaOptions) -> RecolaResult:
    """Write one Aff-Wild2 label file per recording of ``options.gold``.

    Raises:
        UsageError: the folder does not have the AVEC layout, or a recording has only one dimension.
        LabelError: an ARFF file is malformed.
    """
    gold = Path(options.gold)
    files = {}
    for dimension in DIMENSIONS:
        folder = gold / dimension
        if not folder.is_dir():
            raise UsageError(
                f"{gold}: no {dimension}/ folder; expected the AVEC layout GOLD/arousal/<name>.arff and"
                " GOLD/valence/<name>.arff (ratings_gold_standard in AVEC 2016)"
            )
        files[dimension] = {p.stem: p for p in sorted(folder.glob("*.arff"))}
        if not files[dimension]:
            raise UsageError(f"{folder}: no .arff files")
    names = sorted(files["valence"].keys() & files["arousal"].keys())
    alone = sorted(files["valence"].keys() ^ files["arousal"].keys())
    if alone:
        raise UsageError(
            f"{gold}: {len(alone)} recordings have only one dimension ({', '.join(alone[:5])}"
            f"{', ...' if len(alone) > 5 else ''}); each needs valence/<name>.arff and arousal/<name>.arff"
        )
    written, frames, valid, clipped = [], 0, 0, 0
    for name in names:
        traces = [
            align(read_gold_standard(files[d][name], options.column), options.fps, options.frames) for d in DIMENSIONS
        ]
        length = max(t.size for t in traces)
        traces = [np.concatenate([t, np.full(length - t.size, np.nan)]) for t in traces]
        for t in traces:
            outside = np.abs(t) > 1.0
            clipped += int(np.count_nonzero(outside))
            np.clip(t, -1.0, 1.0, out=t)
        try:
            written.append(write_label_file(Path(options.out) / f"{name}.txt", *traces))
        except OSError as exc:
            raise LabelError(f"{options.out}/{name}.txt: cannot write: {exc.strerror or exc}") from None
        frames += length
        valid += int(np.count_nonzero(~np.isnan(traces[0]) & ~np.isnan(traces[1])))
    return RecolaResult(written, frames, valid, clipped)
