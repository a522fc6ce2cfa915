"""Aff-Wild2 valence/arousal label files (``VA_Estimation_Challenge`` layout).

``DIR/<video stem>.txt``, or ``<stem>_left.txt`` / ``<stem>_right.txt`` for the two people of a
two-person video. The first line is ``valence,arousal``; line k+1 holds source frame k (the k-th
frame of the video as distributed); -5 marks a frame without a valid label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affbatch.errors import LabelError

#: The marker of a frame without a valid annotation.
INVALID_LABEL = -5.0
#: Valence and arousal are continuous in [-1, 1].
LABEL_RANGE = (-1.0, 1.0)
HEADER = ("valence", "arousal")
PERSON_SUFFIXES = ("left", "right")


@dataclass(frozen=True)
class LabelFile:
    path: Path
    stem: str  # the video's stem
    person: str | None  # None, "left" or "right"
    valence: np.ndarray  # float64 (frames,), INVALID_LABEL where invalid
    arousal: np.ndarray

    @property
    def name(self) -> str:
        return self.path.stem

    def valid(self) -> np.ndarray:
        """Source frames whose valence and arousal are both valid."""
        return np.flatnonzero((self.valence != INVALID_LABEL) & (self.arousal != INVALID_LABEL))


def read_label_file(path: Path) -> LabelFile:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not lines or tuple(c.strip().lower() for c in lines[0].split(",")) != HEADER:
        first = lines[0] if lines else "(empty file)"
        raise LabelError(f"{path}:1: expected the header 'valence,arousal', got {first!r}")
    values = np.empty((len(lines) - 1, 2), np.float64)
    n = 0
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            if any(rest.strip() for rest in lines[lineno - 1 :]):
                raise LabelError(f"{path}:{lineno}: empty line before the end of the file")
            break
        parts = line.split(",")
        try:
            v, a = (float(p) for p in parts)
        except ValueError:
            raise LabelError(f"{path}:{lineno}: expected two numbers 'valence,arousal', got {line!r}") from None
        for x in (v, a):
            if x != INVALID_LABEL and not (LABEL_RANGE[0] <= x <= LABEL_RANGE[1]) or math.isnan(x):
                raise LabelError(f"{path}:{lineno}: {x} is outside [-1, 1] and is not the invalid marker -5")
        values[n] = v, a
        n += 1
    stem, person = split_person(path.stem)
    return LabelFile(path=path, stem=stem, person=person, valence=values[:n, 0], arousal=values[:n, 1])


def split_person(name: str) -> tuple[str, str | None]:
    """``video_left`` -> (``video``, ``left``); ``video`` -> (``video``, None)."""
    for person in PERSON_SUFFIXES:
        if name.endswith(f"_{person}"):
            return name[: -len(person) - 1], person
    return name, None


def read_label_dir(folder: Path) -> dict[str, list[LabelFile]]:
    """All label files of ``folder`` (not its subfolders), grouped by video stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelError(f"--labels {folder}: not a folder")
    files = sorted(folder.glob("*.txt"))
    if not files:
        inside = sorted({p.parent.name for p in folder.glob("*/*.txt")})
        hint = f" (its subfolders {', '.join(inside)} have some: pass one of them)" if inside else ""
        raise LabelError(f"--labels {folder}: no .txt label files{hint}")
    grouped: dict[str, list[LabelFile]] = {}
    for path in files:
        label = read_label_file(path)
        grouped.setdefault(label.stem, []).append(label)
    return grouped
