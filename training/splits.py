"""Subject-independent train/validation/test splits (the paper's Section II-F: "a person could
appear only in one of those three sets"; 350, 70 and 138 videos).

Subject mapping, a CSV file with a header (column names in any order and case; other columns
are ignored)::

    video,subject,person
    video12,s031,
    video7,s002,left
    video7,s417,right

One row per annotated person: ``video`` is the video's stem (the label file's name without
``.txt``), ``subject`` any identifier of the person, ``person`` (optional column) ``left`` or
``right`` for the two people of a two-person video, whose label files are ``<video>_left.txt``
and ``<video>_right.txt``. A ``video`` that already ends in ``_left`` / ``_right`` with an empty
``person`` is read as that label name.

Grouping: videos and subjects form a graph (a video is linked to each of its subjects); each
connected component goes to one split as a whole. So a subject never appears in two splits, and
the two people of a video stay together even when they are different subjects, and so does
every other video either of them appears in.

Assignment, deterministic for a given mapping and seed on any machine and Python version: the
components are ordered by size (largest first, so that the big ones do not spoil the
proportions at the end), ties by the SHA-256 of ``"<seed>:<first video of the component>"``;
each goes to the split that is furthest below its target share after taking it, i.e. the split
with the smallest ``(assigned + size) / target``. Size is the number of videos, or with
``by="frames"`` the number of frames in the label files.

Output, by the extension of ``out``: ``.csv`` with columns ``name,video,subject,split``, one row
per label name; or ``.json``:
``{"seed", "proportions", "by", "splits": {"train": [names], ...}, "report": {...}}``.
:func:`read_split` reads either back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from affbatch.errors import LabelError, UsageError
from affbatch.evaluation.labels import PERSON_SUFFIXES, read_label_dir, split_person
from affbatch.files import write_text_atomically

SPLITS = ("train", "validation", "test")
#: The paper's split in videos (Section II-F); only the proportions matter.
PAPER_PROPORTIONS = (350.0, 70.0, 138.0)
BALANCE = ("videos", "frames")


@dataclass(frozen=True)
class Person:
    """One row of the subject mapping."""

    name: str  # label name: <video>, <video>_left or <video>_right
    video: str  # the video's stem
    subject: str
    line: int


def read_subject_mapping(path: Path) -> list[Person]:
    """Read and check a subject mapping (see the module docstring).

    Raises:
        UsageError: the file is missing, has no ``video``/``subject`` columns, an empty or
            unknown value, a label name twice with different subjects, or a video both with and
            without ``left``/``right`` rows.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the subject mapping: {getattr(exc, 'strerror', None) or exc}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise UsageError(f"{path}: empty; expected a CSV with the header 'video,subject[,person]'")
    header = [c.strip().lower() for c in rows[0]]
    if "video" not in header or "subject" not in header:
        raise UsageError(f"{path}:1: expected a header with the columns video, subject [, person], got {rows[0]!r}")
    iv, isub = header.index("video"), header.index("subject")
    ip = header.index("person") if "person" in header else None
    people: dict[str, Person] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise UsageError(f"{path}:{lineno}: {len(row)} columns, the header has {len(header)}: {row!r}")
        video, subject = row[iv].strip(), row[isub].strip()
        person = row[ip].strip().lower() if ip is not None else ""
        if not video or not subject:
            raise UsageError(f"{path}:{lineno}: empty video or subject in {row!r}")
        if person and person not in PERSON_SUFFIXES:
            raise UsageError(f"{path}:{lineno}: person {row[ip]!r}: expected left, right or empty")
        name = f"{video}_{person}" if person else video
        stem = split_person(name)[0]
        if name in people:
            first = people[name]
            if first.subject != subject:
                raise UsageError(
                    f"{path}:{lineno}: {name} has subject {subject!r} here and {first.subject!r} on line {first.line}"
                    " (one subject per label name; two people need person left/right)"
                )
            continue
        people[name] = Person(name, stem, subject, lineno)
    if not people:
        raise UsageError(f"{path}: no rows after the header")
    names_of = defaultdict(list)
    for p in people.values():
        names_of[p.video].append(p.name)
    for video, names in names_of.items():
        if video in names and len(names) > 1:
            raise UsageError(
                f"{path}: video {video} has a row without person (line {people[video].line}) and rows for"
                f" {', '.join(sorted(n for n in names if n != video))}; a video has one person or left/right"
            )
    return sorted(people.values(), key=lambda p: p.name)


def group_videos(people: Sequence[Person]) -> list[list[str]]:
    """Connected components of the video-subject graph, as sorted lists of video stems."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]  # path halving
            node = parent[node]
        return node

    for p in people:
        a, b = find("v:" + p.video), find("s:" + p.subject)
        if a != b:
            parent[max(a, b)] = min(a, b)  # a fixed rule, so the result never depends on row order
    groups = defaultdict(set)
    for p in people:
        groups[find("v:" + p.video)].add(p.video)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def parse_proportions(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"350,70,138"`` or ``"0.7,0.1,0.2"`` (or a sequence) -> three non-negative shares of sum 1."""
    try:
        values = tuple(float(x) for x in (text.replace("/", ",").split(",") if isinstance(text, str) else text))
    except ValueError:
        values = ()
    if len(values) != 3 or any(not v >= 0 for v in values) or sum(values) <= 0 or values[0] == 0:
        raise UsageError(
            f"--proportions {text!r}: expected three non-negative numbers train,validation,test with train > 0,"
            " e.g. 350,70,138 (the paper's) or 0.7,0.1,0.2"
        )
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _order_key(seed: int, group: list[str]) -> str:
    return hashlib.sha256(f"{seed}:{group[0]}".encode()).hexdigest()


def assign(groups: Sequence[list[str]], sizes: Sequence[float], proportions, seed: int = 0) -> list[str]:
    """The split of each group (see the module docstring), in the order of ``groups``."""
    order = sorted(range(len(groups)), key=lambda i: (-sizes[i], _order_key(seed, groups[i])))
    shares = dict(zip(SPLITS, proportions, strict=True))
    candidates = [s for s in SPLITS if shares[s] > 0]
    assigned = dict.fromkeys(SPLITS, 0.0)
    result = [""] * len(groups)
    for i in order:
        best = min(candidates, key=lambda s: ((assigned[s] + sizes[i]) / shares[s], SPLITS.index(s)))
        assigned[best] += sizes[i]
        result[i] = best
    return result


@dataclass(frozen=True)
class SplitCounts:
    videos: int
    labels: int  # label names (people): two per two-person video
    subjects: int
    frames: int | None = None  # lines of the label files; None without labels
    valid_frames: int | None = None


@dataclass(frozen=True)
class SplitOptions:
    mapping: Path
    out: Path  # .csv or .json
    labels: Path | None = None  # folder of label files: frames per split
    proportions: tuple[float, float, float] = PAPER_PROPORTIONS
    seed: int = 0
    by: str = "videos"  # or "frames" (needs labels)

    def __post_init__(self):
        object.__setattr__(self, "proportions", parse_proportions(self.proportions))
        if self.by not in BALANCE:
            raise UsageError(f"--by {self.by!r}: choose videos or frames")
        if self.by == "frames" and self.labels is None:
            raise UsageError("--by frames needs --labels (the frames are counted in the label files)")
        if Path(self.out).suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--out {self.out}: the split is written as .csv or .json; name the file so")


@dataclass(frozen=True)
class SplitResult:
    split: dict[str, str]  # label name -> split
    counts: dict[str, SplitCounts]
    groups: int
    missing_labels: list[str] = field(default_factory=list)  # in the mapping, no label file
    unmapped_labels: list[str] = field(default_factory=list)  # label files not in the mapping

    def to_json(self) -> dict:
        return {
            "counts": {s: asdict(c) for s, c in self.counts.items()},
            "groups": self.groups,
            "missing_labels": self.missing_labels,
            "unmapped_labels": self.unmapped_labels,
        }


def split(options: SplitOptions) -> SplitResult:
    """Split the mapping's videos, count them per split, and write ``options.out``."""
    people = read_subject_mapping(options.mapping)
    frames: dict[str, tuple[int, int]] = {}
    unmapped: list[str] = []
    if options.labels is not None:
        for files in read_label_dir(options.labels).values():
            for label in files:
                frames[label.name] = (label.valence.size, label.valid().size)
        unmapped = sorted(set(frames) - {p.name for p in people})
    missing = sorted(p.name for p in people if options.labels is not None and p.name not in frames)
    if options.by == "frames" and missing:
        raise LabelError(
            f"--by frames: no label file in {options.labels} for {len(missing)} label names of {options.mapping}:"
            f" {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
        )
    groups = group_videos(people)
    names_of = defaultdict(list)
    for p in people:
        names_of[p.video].append(p.name)
    if options.by == "frames":
        sizes = [float(sum(frames[n][0] for v in g for n in names_of[v])) for g in groups]
    else:
        sizes = [float(len(g)) for g in groups]
    video_split = {}
    for g, s in zip(groups, assign(groups, sizes, options.proportions, options.seed), strict=True):
        video_split.update(dict.fromkeys(g, s))
    result = {p.name: video_split[p.video] for p in people}
    counts = {}
    for s in SPLITS:
        members = [p for p in people if result[p.name] == s]
        have = [frames[p.name] for p in members if p.name in frames]
        counts[s] = SplitCounts(
            videos=len({p.video for p in members}),
            labels=len(members),
            subjects=len({p.subject for p in members}),
            frames=sum(f for f, _ in have) if options.labels is not None else None,
            valid_frames=sum(v for _, v in have) if options.labels is not None else None,
        )
    outcome = SplitResult(result, counts, len(groups), missing, unmapped)
    _write(options, people, outcome)
    return outcome


def _write(options: SplitOptions, people: Sequence[Person], result: SplitResult) -> None:
    out = Path(options.out)
    ordered = sorted(people, key=lambda p: (SPLITS.index(result.split[p.name]), p.name))
    if out.suffix.lower() == ".json":
        document = {
            "seed": options.seed,
            "proportions": dict(zip(SPLITS, options.proportions, strict=True)),
            "by": options.by,
            "splits": {s: [p.name for p in ordered if result.split[p.name] == s] for s in SPLITS},
            "report": result.to_json(),
        }
        text = json.dumps(document, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["name", "video", "subject", "split"])
        writer.writerows([p.name, p.video, p.subject, result.split[p.name]] for p in ordered)
        text = buffer.getvalue()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out, text)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None


def read_split(path: Path) -> dict[str, str]:
    """``{label name: split}`` from a split written by :func:`split` (.csv or .json)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the split: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix.lower() == ".json":
        try:
            splits = json.loads(text)["splits"]
            result = {name: s for s in SPLITS for name in splits.get(s, [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(
                f"{path}: not a split file (expected JSON with 'splits': {{'train': [...], ...}})"
            ) from None
    else:
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "name" not in rows[0] or "split" not in rows[0]:
            raise UsageError(f"{path}: not a split file (expected the CSV header name,video,subject,split)")
        result = {row["name"]: row["split"] for row in rows}
    bad = sorted({s for s in result.values() if s not in SPLITS})
    if bad:
        raise UsageError(f"{path}: unknown split {bad[0]!r}; expected one of {', '.join(SPLITS)}")
    return result
