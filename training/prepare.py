"""``affbatch-train prepare``: Aff-Wild2 as distributed -> a crop store (``training.store``).

Two sources:

* **videos** + ``VA_Estimation_Challenge`` label files: every video goes through the pipeline of
  ``affbatch score`` itself (same probe and frame selection, decoder, RetinaFace, tracker and
  ``crop_faces``), so a model trained on the store sees the crops it will see when scoring.
  ``--fps native`` is the default: the label files index the frames of the videos as
  distributed. Label files join the tracks as ``affbatch eval`` joins them: a plain file to the
  longest track, ``_left``/``_right`` to the two longest by median box centre x
  (``affbatch.evaluation.evaluate.pick_track``), each row labelled with its source frame's values.
* **cropped_aligned** frames (``DIR/<name>/<00001>.jpg``, numbered from 1: file k is source
  frame k - 1): each folder is one person's track; the picture (112x112 in Aff-Wild2) is
  resized to 96x96 by ``crop_faces`` with a box whose crop square is the whole picture, so the
  same antialiased resize applies. JPEGs are decoded with PyAV.

With ``--labels``, inputs without a label file are skipped (listed); without, every track is
stored unlabelled. A video (or folder) that cannot be read fails alone, with a one-line reason.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from affbatch.errors import UsageError, VideoError
from affbatch.evaluation.evaluate import pick_track
from affbatch.evaluation.labels import PERSON_SUFFIXES, LabelFile, read_label_dir, split_person
from affbatch.faces.crops import CROP_MARGIN, CROP_SIZE, crop_faces
from affbatch.pipeline import as_video_error
from training.store import SHARD_ROWS, StoreSummary, StoreWriter, crops_to_uint8

FPS_CHOICES = ("native", "30")
#: The paper's label files index the frames of the videos as distributed.
DEFAULT_FPS = "native"
#: Frames per chunk written from a track: bounds the memory a long track needs.
WRITE_CHUNK = 1024
#: A checkpoint (``--resume`` restarts from the last one) after the first input that ends at
#: least this long after the previous checkpoint: at most this much work is lost to a kill, and
#: shards are cut short at most once per interval.
CHECKPOINT_SECONDS = 60.0
_FRAME_FILE = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)

Report = Callable[[str], None]


@dataclass
class PrepareOptions:
    """Options of ``prepare``; defaults defined once, here."""

    out: Path
    labels: Path | None = None
    fps: str = DEFAULT_FPS
    detector: str = "auto"
    device: str = "auto"
    decoder: str = "auto"
    batch_size: int = 64
    split: str | None = None
    splits: Path | None = None  # a split file (training.splits): split per label name
    shard_rows: int = SHARD_ROWS
    align: bool = False
    overwrite: bool = False
    resume: bool = False
    checkpoint_seconds: float = CHECKPOINT_SECONDS

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.fps not in FPS_CHOICES:
            raise UsageError(f"--fps {self.fps!r}: choose native (what the label files index) or 30")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.labels is not None and not Path(self.labels).is_dir():
            raise UsageError(f"--labels {self.labels}: not a folder")
        self._split_of: dict[str, str] = {}
        if self.splits is not None:
            from training.splits import read_split

            self._split_of = read_split(Path(self.splits))

    def split_of(self, label: str | None) -> str | None:
        """The split a label file's track goes to: from --splits, else --split."""
        return self._split_of.get(label or "", self.split)


# -- labels ------------------------------------------------------------------------------------


def read_labels(folder: Path | None) -> dict[str, LabelFile] | None:
    """Label files by name (``video``, ``video_left``, ...), or None without ``--labels``."""
    if folder is None:
        return None
    return {label.name: label for files in read_label_dir(folder).values() for label in files}


def labels_for(stem: str, labels: dict[str, LabelFile], stems: set[str]) -> list[tuple[LabelFile, str | None]]:
    """The label files of the video ``stem`` and the person each is for, as ``affbatch eval``
    matches them: ``stem.txt`` (one person), else ``stem_left.txt`` / ``stem_right.txt``; a
    label file named exactly like another video (whose own name ends in ``_left``) is that video's."""
    if stem in labels:
        return [(labels[stem], None)]
    found = []
    for person in PERSON_SUFFIXES:
        name = f"{stem}_{person}"
        if name in labels and name not in stems:
            found.append((labels[name], person))
    return found


def label_values(label: LabelFile | None, source_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(valence, arousal) float32 at ``source_frames`` (NaN where invalid or past the file's end),
    the label file's valid frames, and how many of those are not among ``source_frames``."""
    n = len(source_frames)
    if label is None:
        return np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32), 0, 0
    valid = label.valid()
    ok = np.zeros(len(label.valence) + 1, bool)
    ok[valid] = True
    src = np.clip(np.asarray(source_frames, np.int64), -1, len(label.valence))  # -1 / len -> the False slot
    good = ok[src]
    at = np.where(good, src, 0)
    valence = np.where(good, label.valence[at] if len(label.valence) else 0, np.nan).astype(np.float32)
    arousal = np.where(good, label.arousal[at] if len(label.arousal) else 0, np.nan).astype(np.float32)
    missing = len(valid) - int(np.isin(valid, source_frames).sum())
    return valence, arousal, len(valid), missing


# -- resumable loop over inputs ----------------------------------------------------------------


def _folder_setting(folder: Path | None) -> str | None:
    """A folder as the store's settings record it: absolute (``labels`` and ``./labels`` are one
    setting for ``--resume``), links not followed (another name is another setting)."""
    return os.path.abspath(folder) if folder is not None else None


def _fingerprint(path: Path) -> list[int]:
    """What tells whether an input changed since a checkpoint: size and mtime of a video file;
    number, total size and latest mtime of the files of a frame folder."""
    if path.is_dir():
        stats = [p.stat() for p in path.iterdir() if p.is_file()]
        return [len(stats), sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)]
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _run_inputs(writer: StoreWriter, todo: list, summary: StoreSummary, options: PrepareOptions, report, do_one):
    """``do_one(item) -> record`` for each (name, path, item) of ``todo``, with checkpoints.

    An input a resumed store already has (ok, unchanged since) is reused as it is; one that
    failed or changed is done again. A failure inside ``do_one`` is the input's alone.
    """
    done = writer.done
    last_checkpoint = time.perf_counter()
    reused = 0
    for i, (name, path, item) in enumerate(todo, 1):
        try:
            fingerprint = _fingerprint(path)
        except OSError:
            fingerprint = None
        previous = done.get(name)
        if previous is not None and previous["status"] == "ok" and previous.get("fingerprint") == fingerprint:
            summary.videos.append(previous)
            reused += 1
            continue
        writer.forget(name)
        t0 = time.perf_counter()
        record = do_one(item)
        record["fingerprint"] = fingerprint
        record["seconds"] = round(time.perf_counter() - t0, 3)
        writer.add_video(record)
        summary.videos.append(record)
        if time.perf_counter() - last_checkpoint >= options.checkpoint_seconds:
            writer.checkpoint()
            last_checkpoint = time.perf_counter()
        report(_line(i, len(todo), record))
    if reused:
        report(f"--resume: {reused} of {len(todo)} inputs were already in {writer.folder}, unchanged: reused")
    others = sorted(set(done) - {name for name, _, _ in todo})
    if others:
        report(f"--resume: the store keeps {len(others)} inputs not given this time: {', '.join(others[:5])}"
               + (", ..." if len(others) > 5 else ""))  # fmt: skip


# -- from videos -------------------------------------------------------------------------------


class _CropSpill:
    """The crops the Scorer's crop hook hands out for one video, in a spill file on disk (a long
    video's crops do not fit in memory), numbered as the hook numbers them."""

    def __init__(self, folder: Path):
        self.file = tempfile.NamedTemporaryFile(dir=folder, prefix="crops-", suffix=".u8")  # noqa: SIM115 (closed by close())
        self.count = 0

    def __call__(self, video, detection: np.ndarray, crops: np.ndarray) -> None:
        if len(detection) and detection[0] != self.count:  # the hook's numbers are consecutive from 0
            raise RuntimeError(f"crop {detection[0]} arrived after {self.count} crops")
        self.file.write(crops_to_uint8(crops).tobytes())
        self.count += len(crops)

    def crops(self) -> np.ndarray:
        self.file.flush()
        if self.count == 0:
            return np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        return np.memmap(self.file.name, np.uint8, "r", shape=(self.count, CROP_SIZE, CROP_SIZE, 3))

    def close(self) -> None:
        self.file.close()


def make_scorer(options: PrepareOptions):
    """The Scorer of ``affbatch score`` with the detector and tracks only (no affect model)."""
    from affbatch.affect.resolve import FACES_ONLY
    from affbatch.pipeline import ScoreOptions, Scorer

    return Scorer(
        ScoreOptions(
            fps=options.fps,
            model=FACES_ONLY,
            detector=options.detector,
            device=options.device,
            decoder=options.decoder,
            batch_size=options.batch_size,
            align=options.align,
        )
    )


def prepare_videos(paths: list[str | Path], options: PrepareOptions, report: Report = print) -> StoreSummary:
    """Videos (files or folders) + ``options.labels`` -> a store in ``options.out``."""
    from affbatch.video.inputs import collect_videos

    t_start = time.perf_counter()
    videos = collect_videos(paths)
    if not videos:
        raise UsageError(f"no video files found in {', '.join(map(str, paths))}")
    labels = read_labels(options.labels)
    stems = {Path(v.name).stem for v in videos}
    summary = StoreSummary(Path(options.out))
    todo = []
    for video in videos:
        matched = labels_for(Path(video.name).stem, labels, stems) if labels is not None else [(None, None)]
        if matched:
            todo.append((video, matched))
        else:
            summary.skipped.append(video.name)
    scorer = make_scorer(options)
    identity = scorer.analyzer.identity
    settings = {
        "source": "videos",
        "fps": options.fps,
        "detector": identity.detector,
        "detector_sha256": identity.detector_sha256,
        "decoder": scorer.decoder.name,
        "align": options.align,
        "labels": _folder_setting(options.labels),
    }
    with StoreWriter(options.out, settings, options.shard_rows, options.overwrite, options.resume) as writer:

        def do_one(item) -> dict:
            video, matched = item
            spill = _CropSpill(writer.folder)
            try:
                result = scorer.score(video, on_crops=spill)
                if not result.ok:
                    return {"video": video.name, "status": "failed", "error": result.error}
                written = _write_video_tracks(writer, video.name, result, spill.crops(), matched, options)
                return {"video": video.name, "status": "ok", "error": None, "frames": result.row.frames, **written}
            except Exception as exc:  # one video's failure, whatever it is, must not end the run
                writer.discard_track()
                message = str(as_video_error(video, exc))
                return {"video": video.name, "status": "failed", "error": message.removeprefix(f"{video.path}: ")}
            finally:
                spill.close()

        _run_inputs(writer, [(v.name, v.path, (v, m)) for v, m in todo], summary, options, report, do_one)
    return _finish(summary, writer, t_start)


def _write_video_tracks(writer, video: str, result, crops: np.ndarray, matched, options) -> dict:
    """Store the tracks the label files match (all tracks without labels); returns what was stored."""
    stored, unmatched = [], []
    table = result.table
    has_face = table.column("track").is_valid().to_numpy(zero_copy_only=False)
    faces = {
        name: table.column(name).to_numpy(zero_copy_only=False)[has_face]
        for name in ("frame", "source_frame", "track", "x1", "y1", "x2", "y2")
    }
    faces["crop"] = result.crop_index[has_face]
    width = result.row.width
    if matched == [(None, None)]:
        pairs = [(None, int(t)) for t in np.unique(faces["track"])]
    else:
        pairs = [(label, pick_track(faces, person, width)) for label, person in matched]
    for label, track in pairs:
        if track is None:  # a label file without a face track: listed, all its valid frames missing
            unmatched.append(label.name)
            _, _, valid, _ = label_values(label, np.zeros(0, np.int64))
            meta = {"video": video, "track": -1, "label": label.name, "split": options.split_of(label.name)}
            writer.begin_track({**meta, "valid_labels": valid, "missing": valid})
            writer.end_track()
            continue
        pick = np.flatnonzero(faces["track"] == track)  # frame order: traces rows are sorted by frame
        frame = faces["frame"][pick].astype(np.int64)
        source = faces["source_frame"][pick].astype(np.int64)
        valence, arousal, valid, missing = label_values(label, source)
        writer.begin_track(
            {
                "video": video,
                "track": track,
                "label": label.name if label else None,
                "split": options.split_of(label.name if label else None),
                "valid_labels": valid,
                "missing": missing,
            }
        )
        crop = faces["crop"][pick]
        for a in range(0, len(pick), WRITE_CHUNK):
            part = slice(a, a + WRITE_CHUNK)
            writer.append(
                {
                    "frame": frame[part],
                    "source_frame": source[part],
                    "crop": np.asarray(crops[crop[part]]),
                    **{c: faces[c][pick][part] for c in ("x1", "y1", "x2", "y2")},
                    "valence": valence[part],
                    "arousal": arousal[part],
                }
            )
        writer.end_track()
        stored.append({"label": label.name if label else None, "track": track, "rows": len(pick), "missing": missing})
    return {"tracks": stored, "labels_without_track": unmatched}


# -- from cropped_aligned frames -----------------------------------------------------------------


def read_jpeg(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of a JPEG file, decoded by FFmpeg through PyAV."""
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def resize_whole(image: np.ndarray) -> np.ndarray:
    """uint8 (96, 96, 3): the whole picture through ``crop_faces`` (same antialiased resize)."""
    h, w = image.shape[:2]
    side = max(h, w) / CROP_MARGIN  # crop_faces' square is CROP_MARGIN x the box's longer side
    box = np.array([[w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2]])
    return crops_to_uint8(crop_faces(image[None], np.zeros(1, np.int64), box))[0]


def prepare_cropped_aligned(folder: Path, options: PrepareOptions, report: Report = print) -> StoreSummary:
    """``folder/<name>/<00001>.jpg`` + ``options.labels`` -> a store in ``options.out``."""
    t_start = time.perf_counter()
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--cropped-aligned {folder}: not a folder")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise UsageError(f"--cropped-aligned {folder}: no subfolders of frames (<name>/00001.jpg)")
    labels = read_labels(options.labels)
    summary = StoreSummary(Path(options.out))
    todo = [p for p in subfolders if labels is None or p.name in labels]
    summary.skipped = [p.name for p in subfolders if labels is not None and p.name not in labels]
    settings = {"source": "cropped_aligned", "fps": "native", "detector": None, "detector_sha256": None}
    settings["labels"] = _folder_setting(options.labels)
    with StoreWriter(options.out, settings, options.shard_rows, options.overwrite, options.resume) as writer:

        def do_one(sub: Path) -> dict:
            video, person = split_person(sub.name)
            label = labels.get(sub.name) if labels is not None else None
            try:
                stored = _write_frame_folder(writer, sub, video, 1 if person == "right" else 0, label, options)
                return {"video": sub.name, "status": "ok", "error": None, **stored}
            except (OSError, ValueError, VideoError) as exc:
                writer.discard_track()
                error = str(exc) if isinstance(exc, VideoError) else f"{type(exc).__name__}: {exc}"
                return {"video": sub.name, "status": "failed", "error": error}

        _run_inputs(writer, [(sub.name, sub, sub) for sub in todo], summary, options, report, do_one)
    return _finish(summary, writer, t_start)


def _write_frame_folder(writer: StoreWriter, sub: Path, video: str, track: int, label, options) -> dict:
    frames = []
    for p in sub.iterdir():
        m = _FRAME_FILE.match(p.name)
        if m:
            frames.append((int(m.group(1)) - 1, p))
    frames.sort()
    if not frames:
        raise VideoError(f"{sub}: no numbered JPEG frames (00001.jpg, ...)")
    if frames[0][0] < 0:
        raise VideoError(f"{frames[0][1]}: frame files are numbered from 00001")
    source = np.array([f for f, _ in frames], np.int64)
    valence, arousal, valid, missing = label_values(label, source)
    name = label.name if label else None
    meta = {"video": video, "track": track, "label": name, "split": options.split_of(name)}
    writer.begin_track({**meta, "input": sub.name, "valid_labels": valid, "missing": missing})
    for a in range(0, len(frames), WRITE_CHUNK):
        chunk = frames[a : a + WRITE_CHUNK]
        crops = np.stack([resize_whole(_read_frame(path)) for _, path in chunk])
        part = slice(a, a + len(chunk))
        writer.append(
            {
                "frame": source[part],
                "source_frame": source[part],
                "crop": crops,
                "valence": valence[part],
                "arousal": arousal[part],
            }
        )
    writer.end_track()
    return {"tracks": [{"label": meta["label"], "track": track, "rows": len(frames), "missing": missing}]}


def _read_frame(path: Path) -> np.ndarray:
    try:
        return read_jpeg(path)
    except (OSError, av.FFmpegError, StopIteration) as exc:
        raise VideoError(f"{path}: not a readable JPEG ({type(exc).__name__})") from None


def _line(i: int, n: int, record: dict) -> str:
    head = f"[{i}/{n}] {record['video']}:"
    if record["status"] != "ok":
        return f"{head} FAILED: {record['error']}"
    tracks = record.get("tracks", [])
    rows = sum(t["rows"] for t in tracks)
    extra = ""
    if record.get("labels_without_track"):
        extra = f"; no face track for {', '.join(record['labels_without_track'])}"
    return f"{head} ok, {len(tracks)} track(s), {rows} crops in {record['seconds']:.1f} s{extra}"


def _finish(summary: StoreSummary, writer: StoreWriter, t_start: float) -> StoreSummary:
    summary.tracks = len(writer.tracks)
    summary.rows = sum(t["rows"] for t in writer.tracks)
    summary.seconds = time.perf_counter() - t_start
    return summary
