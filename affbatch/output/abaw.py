"""``affbatch export --to abaw``: one Aff-Wild2 challenge file per video and person.

Each file is what ``affbatch eval`` reads as labels: a ``valence,arousal`` header, then line k+1
for source frame k, a value on every line, so a file has exactly as many lines as its video has
source frames (the challenge checks this). Names and tracks follow eval's own rules
(``affbatch.evaluation.evaluate``: ``label_target``, ``pick_track``, ``per_source_frame``), so
eval over the exported files scores each track against itself.

* With ``--names`` (the challenge's list of test files), exactly those files are written,
  each matched to its video and track as eval matches a label file of that name. Without it, a
  video is written as ``<stem>_left.txt`` and ``<stem>_right.txt`` when it shows two people:
  its two longest tracks are seen in the same frames for at least ``TWO_PEOPLE_MIN_S`` and for
  at least ``TWO_PEOPLE_MIN_SHARE`` of the shorter one's frames (a track cut in two by a missed
  detection never overlaps itself; a second person does). Otherwise ``<stem>.txt``.
* Per source frame, the mean of the track's predictions in the output frames showing it (traces
  at 30 fps from a 25 fps video show some source frames twice); a source frame without the
  track's face, or never shown (dropped by fps=30 from a faster video), is filled by ``--fill``.
  A person never seen at all gets the median of every prediction in the traces (``--fill zero``:
  0), and the summary says so. Values are clipped to [-1, 1].
* The source frame count: the manifest's ``frames`` for traces at ``--fps native``; at 30 fps
  the manifest counts output frames, so the video is probed (found by its name, or under
  ``--videos``) and ``select_frames`` is replayed to check that it is the file that was scored;
  when the video is not found the count is estimated from the manifest's rate and duration,
  and the summary says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from affbatch.errors import AffbatchError, UsageError
from affbatch.evaluation.evaluate import label_target, per_source_frame, pick_track, split_by_video, video_stems
from affbatch.evaluation.labels import HEADER, LABEL_RANGE
from affbatch.files import atomic_path

#: ``--fill``: how frames without a prediction get one.
FillMethod = Literal["nearest", "linear", "hold", "zero"]
FILL_CHOICES: tuple[FillMethod, ...] = ("nearest", "linear", "hold", "zero")
#: Two tracks seen together this long (and ...)
TWO_PEOPLE_MIN_S = 1.0
#: ... for this share of the shorter track's frames are two people.
TWO_PEOPLE_MIN_SHARE = 0.5
#: Digits after the point in the files: float32 predictions in [-1, 1] keep 7 significant digits.
DECIMALS = 6

Report = Callable[[str], None]


@dataclass
class AbawFile:
    name: str  # file stem: <stem>, <stem>_left, <stem>_right
    video: str
    person: str | None
    track: int | None
    lines: int  # source frames (lines after the header)
    predicted: int  # source frames with a prediction of the track
    count_from: str  # "manifest", "probed video" or "estimated"

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class AbawSummary:
    files: list[AbawFile] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video, why)
    notes: list[str] = field(default_factory=list)


def fill_frames(values: np.ndarray, known: np.ndarray, method: FillMethod, default: float) -> np.ndarray:
    """``values`` (n,) with the frames where ``known`` is False filled.

    ``nearest``: the closest known frame's value (a tie goes to the earlier frame); ``linear``:
    interpolated between the known frames around it; ``hold``: the last known value before it;
    frames before the first known one take the first (``linear`` and ``hold``) and after the
    last the last. ``zero``: 0. No known frame at all: ``default`` (``zero``: 0).
    """
    n = len(values)
    out = np.asarray(values, np.float64).copy()
    idx = np.flatnonzero(known)
    if method == "zero":
        out[~known] = 0.0
        return out
    if len(idx) == 0:
        return np.full(n, float(default))
    frames = np.arange(n)
    if method == "linear":
        return np.interp(frames, idx, out[idx])
    pos = np.searchsorted(idx, frames, side="right")  # known frames at or before i: idx[:pos]
    before = idx[np.maximum(pos - 1, 0)]
    after = idx[np.minimum(pos, len(idx) - 1)]
    if method == "hold":
        return out[np.where(pos > 0, before, idx[0])]
    if method == "nearest":
        has_before = pos > 0
        use_before = has_before & ((frames - before) <= np.abs(after - frames))
        return out[np.where(use_before, before, after)]
    raise UsageError(f"--fill {method!r}: choose one of {', '.join(FILL_CHOICES)}")


def two_people(rows: dict[str, np.ndarray], fps: float) -> bool:
    """Whether the video's two longest tracks are two people seen together (see the module)."""
    track = rows["track"]
    ids, counts = np.unique(track[track >= 0], return_counts=True)
    if len(ids) < 2:
        return False
    first, second = ids[np.lexsort((ids, -counts))][:2]
    frames = rows["frame"] if "frame" in rows else rows["source_frame"]
    a, b = np.unique(frames[track == first]), np.unique(frames[track == second])
    together = len(np.intersect1d(a, b, assume_unique=True))
    return together >= TWO_PEOPLE_MIN_S * fps and together >= TWO_PEOPLE_MIN_SHARE * min(len(a), len(b))


@dataclass
class SourceCount:
    frames: int
    how: str  # "manifest", "probed video", "estimated"
    basis: str = ""  # what an estimate rests on


def source_frame_count(
    video: str, rows: dict[str, np.ndarray], manifest_row: dict | None, fps_mode: str, videos_dir: Path | None
) -> SourceCount:
    """How many source frames the video has (see the module); AffbatchError if the probed file
    is not the one that was scored."""
    seen = int(rows["source_frame"].max()) + 1 if len(rows["source_frame"]) else 0
    row = manifest_row or {}
    if fps_mode == "native" and row.get("frames"):
        return SourceCount(max(int(row["frames"]), seen), "manifest")
    path = (videos_dir / video) if videos_dir is not None else Path(video)
    if path.is_file():
        from affbatch.video.framerate import select_frames
        from affbatch.video.probe import probe

        info = probe(path)
        slots, _ = select_frames(info, "native" if fps_mode == "native" else "30")
        scored = int(rows["frame"].max()) + 1 if len(rows["frame"]) else 0
        shown = np.full(scored, -1, np.int64)
        shown[rows["frame"]] = rows["source_frame"]
        if not np.array_equal(shown, slots):
            raise AffbatchError(
                f"{path}: its frames do not match the traces of {video} ({len(slots)} output frames now): "
                "was the file changed after it was scored? (--videos names where the scored videos are)"
            )
        return SourceCount(info.frames, "probed video")
    if row.get("native_fps") and row.get("duration_s"):
        estimate = max(int(round(row["native_fps"] * row["duration_s"])), seen)
        return SourceCount(estimate, "estimated", "from the manifest's rate and duration")
    return SourceCount(seen, "estimated", "as the last source frame in the traces plus one (no manifest row)")


def _path_hint(video: str, videos_dir: Path | None) -> str:
    return f"{videos_dir / video if videos_dir is not None else video} not found"


def write_abaw(
    table: pa.Table,
    manifest: dict[str, dict],
    fps_mode: str,
    out: Path,
    fill: FillMethod = "nearest",
    videos_dir: Path | None = None,
    names: list[str] | None = None,
    report: Report | None = None,
) -> AbawSummary:
    """Write the challenge files of every video of ``table`` into the folder ``out``.

    ``manifest``: video -> its manifest row as a dict ({} without a manifest); ``fps_mode``:
    "30" or "native", as the traces were scored. ``names``: the files to write (stems such as
    ``video_left``, as the challenge lists them), each matched to a video and track by eval's
    rule; None: every video, one or two people as the tracks say. A video that cannot be
    written (an ambiguous name, a changed file) is listed in ``failed``; the others are written.
    """
    if fill not in FILL_CHOICES:
        raise UsageError(f"--fill {fill!r}: choose one of {', '.join(FILL_CHOICES)}")
    summary = AbawSummary()
    note = report or summary.notes.append
    by_video = split_by_video(table)
    stems = video_stems(by_video)
    median = _median_prediction(by_video)
    if names is None:
        plan = _plan_from_tracks(by_video, stems, manifest, fps_mode, summary)
    else:
        plan = _plan_from_names(names, by_video, stems, summary, note)
    _check_folder(out, {f"{n}.txt" for n, _, _ in plan})
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, SourceCount | None] = {}
    for name, person, video in plan:
        rows = by_video[video]
        row = manifest.get(video) or {}
        if video not in counts:
            try:
                counts[video] = source_frame_count(video, rows, row, fps_mode, videos_dir)
            except AffbatchError as exc:
                summary.failed.append((video, str(exc)))
                counts[video] = None
            else:
                if counts[video].how == "estimated":
                    note(
                        f"{video}: source frame count estimated as {counts[video].frames} {counts[video].basis} "
                        f"({_path_hint(video, videos_dir)}: --videos DIR counts them exactly)"
                    )
        count = counts[video]
        if count is None:
            continue
        track = pick_track(rows, person, row.get("width"))
        valence, arousal, seen = per_source_frame(rows, track, count.frames)
        known = seen > 0
        if not known.any():
            fallback = "0" if fill == "zero" else f"the median of all predictions ({median[0]:.3f}, {median[1]:.3f})"
            who = f"the {person} person" if person else "a face"
            note(f"{name}.txt: no frame of {video} has {who}: all {count.frames} lines are {fallback}")
        values = np.stack(
            [fill_frames(x, known, fill, m) for x, m in zip((valence, arousal), median, strict=True)], axis=1
        )
        _write_file(out / f"{name}.txt", np.clip(values, *LABEL_RANGE))
        summary.files.append(AbawFile(name, video, person, track, count.frames, int(known.sum()), count.how))
    return summary


def _plan_from_tracks(by_video, stems, manifest, fps_mode, summary) -> list[tuple[str, str | None, str]]:
    """(file name, person, video) for every video: ``<stem>`` or ``_left``/``_right`` (two people)."""
    plan = []
    for video in sorted(by_video):
        rows = by_video[video]
        row = manifest.get(video) or {}
        fps = 30.0 if fps_mode == "30" else float(row.get("native_fps") or 30.0)
        people = ("left", "right") if two_people(rows, fps) else (None,)
        stem = Path(video).stem
        names = [(f"{stem}_{p}" if p else stem, p) for p in people]
        clashes = []
        for n, p in names:
            matched, q, why = label_target(n, stems)
            if (matched, q) != (video, p):
                clashes.append(f"eval would match {n}.txt to " + (f"{matched}" if matched else f"nothing: {why}"))
        if clashes:
            summary.failed.append((video, "; ".join(clashes)))
            continue
        plan += [(n, p, video) for n, p in names]
    return plan


def _plan_from_names(names, by_video, stems, summary, note) -> list[tuple[str, str | None, str]]:
    """(file name, person, video) for each name given, matched as eval matches a label file."""
    plan = []
    for name in names:
        video, person, why = label_target(name, stems)
        if video is None:
            summary.failed.append((name, f"named by --names, but {why}"))
        else:
            plan.append((name, person, video))
    unnamed = sorted(set(by_video) - {video for _, _, video in plan})
    if unnamed:
        shown = ", ".join(unnamed[:5]) + (", ..." if len(unnamed) > 5 else "")
        note(f"{len(unnamed)} videos of the traces are not in --names and are not written: {shown}")
    return plan


def read_names(path: Path) -> list[str]:
    """``--names``: a text file with one file name per line (``.txt`` optional, as the
    challenge's lists of test videos give them), or a folder of label files (their stems)."""
    path = Path(path)
    if path.is_dir():
        names = [p.stem for p in sorted(path.glob("*.txt"))]
    else:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--names {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        names = [line.strip().removesuffix(".txt") for line in lines if line.strip()]
    if not names:
        raise UsageError(f"--names {path}: no names in it")
    return list(dict.fromkeys(names))


def _median_prediction(by_video: dict[str, dict[str, np.ndarray]]) -> tuple[float, float]:
    values = [
        np.stack([r["valence"], r["arousal"]], axis=1)[(r["track"] >= 0) & np.isfinite(r["valence"] + r["arousal"])]
        for r in by_video.values()
    ]
    every = np.concatenate(values) if values else np.zeros((0, 2))
    if len(every) == 0:
        return 0.0, 0.0
    return float(np.median(every[:, 0])), float(np.median(every[:, 1]))


def _check_folder(out: Path, names: set[str]) -> None:
    """Refuse to mix a new export with other label files already in ``out``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if out.is_dir():
        others = sorted(p.name for p in out.glob("*.txt") if p.name not in names)
        if others:
            raise UsageError(
                f"--out {out}: holds {len(others)} other .txt files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}): a submission folder must hold only this export's files"
            )


def _write_file(path: Path, values: np.ndarray) -> None:
    text = "\n".join([",".join(HEADER)] + [f"{v:.{DECIMALS}f},{a:.{DECIMALS}f}" for v, a in values.tolist()])
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8", newline="\n")
