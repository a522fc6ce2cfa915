"""The crop store: face crops with their labels, in sharded Arrow IPC files that a loader memory-maps.

A store is a folder::

    STORE/manifest.json       what the store holds; written last and atomically, so a folder
                              without it is an unfinished ``prepare`` and is refused
    STORE/progress.json       while ``prepare`` runs: the manifest as of its last checkpoint,
                              which ``prepare --resume`` starts from (removed at the end)
    STORE/shard-00000.arrow   Arrow IPC files, uncompressed so that they memory-map without a
    STORE/shard-00001.arrow   copy: a loader reads any 80 rows of any track in O(80 rows)

Rows are (video, track, output frame), the rows ``affbatch score`` would write for that track,
grouped by track: a track's rows are contiguous and in frame order, in one or more *pieces*
(a long track continues in the next shard, so no shard passes ``shard_rows`` rows).

| column | type | meaning |
|---|---|---|
| video | string | the video's name (as ``affbatch score`` names it) |
| track | int32 | the face track id, numbered as ``affbatch score`` numbers them |
| frame | int32 | output frame index (``--fps native``: equal to source_frame) |
| source_frame | int32 | the source frame shown; the index of Aff-Wild2's label files |
| crop | fixed_size_binary(27648) | 96x96x3 uint8 RGB, row-major (height, width, channel) |
| x1, y1, x2, y2 | float32, null | the face box in source pixels (null where not known) |
| valence, arousal | float32, null | the label of source_frame; null where there is no valid label |

Crops are ``affbatch.faces.crops.crop_faces``' [-1, 1] output quantised to 0..255 (half a grey level
at most: 1/255 of the range); a loader maps them back to [-1, 1] at batch time.

``manifest.json``: ``format``, ``format_version``, ``settings`` (source, fps, detector and its
sha256, decoder, crop function and version), ``shards`` (file, rows, bytes), ``tracks`` (per
(video, track): label file name, split, rows, labelled rows, valid labels of the label file and
how many of those have no crop (``missing``, as ``affbatch eval`` counts them), pieces as
``[shard, start, stop]``; a label file no face track matched has an entry of 0 rows, track
-1; ``input``, the input record it came from), and ``videos`` (per input: ok or failed with
the reason, and the input's fingerprint, which tells ``--resume`` whether it changed).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import affbatch
from affbatch import files
from affbatch.errors import AffbatchError, UsageError
from affbatch.faces.crops import CROP_MARGIN, CROP_SIZE, PIXEL_RANGE

FORMAT = "affbatch-crop-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: The state of an unfinished ``prepare``, replaced atomically at each checkpoint (``--resume``).
PROGRESS = "progress.json"
#: Bytes of one crop: 96 x 96 x 3 uint8.
CROP_BYTES = CROP_SIZE * CROP_SIZE * 3
#: Rows per shard: 16384 crops are ~450 MB, small enough to copy or mmap on any machine.
SHARD_ROWS = 16384
#: Rows per Arrow record batch: the unit a reader slices; 1024 crops are 28 MB.
BATCH_ROWS = 1024
#: The crop function whose output the store holds; bump when crop_faces changes its pixels.
CROP_FUNCTION = {"function": "affbatch.faces.crops.crop_faces", "version": 1, "size": CROP_SIZE, "margin": CROP_MARGIN}

SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("track", pa.int32()),
        ("frame", pa.int32()),
        ("source_frame", pa.int32()),
        ("crop", pa.binary(CROP_BYTES)),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("x2", pa.float32()),
        ("y2", pa.float32()),
        ("valence", pa.float32()),
        ("arousal", pa.float32()),
    ]
)
FLOAT_COLUMNS = ("x1", "y1", "x2", "y2", "valence", "arousal")


class StoreError(AffbatchError):
    """A crop store that cannot be read (missing, unfinished, another format)."""


def crops_to_uint8(crops: np.ndarray) -> np.ndarray:
    """crop_faces' float32 (K, 3, S, S) in PIXEL_RANGE -> uint8 (K, S, S, 3), rounded."""
    low, high = PIXEL_RANGE
    scaled = (np.asarray(crops, np.float32) - low) * (255.0 / (high - low))
    return np.rint(scaled).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


@dataclass(frozen=True)
class TrackEntry:
    """One (video, track) of a store: where its rows are and what its labels cover."""

    index: int  # position in the store's track list
    video: str
    track: int
    label: str | None  # the label file's name (e.g. ``video_left``), None if unlabelled
    split: str | None
    rows: int
    labelled: int  # rows with a valid label
    valid_labels: int  # valid frames of the label file
    missing: int  # valid labelled frames without a crop (no face found there)
    pieces: tuple[tuple[int, int, int], ...]  # (shard, start, stop)

    @property
    def name(self) -> str:
        return self.label or f"{self.video}#{self.track}"


class StoreWriter:
    """Writes a store: ``add_track`` for each (video, track), ``add_video`` for each input, then ``close``.

    Use as a context manager; an exception leaves the folder without a manifest (unfinished).
    ``checkpoint()`` makes everything added so far durable: it closes the shard being written
    (an Arrow file is readable only once closed) and replaces ``progress.json``. A writer opened
    with ``resume=True`` on such a folder (or on a finished store) starts from its last
    checkpoint: shards written after it are deleted, and the inputs it lists can be skipped.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        settings: Mapping[str, Any],
        shard_rows: int = SHARD_ROWS,
        overwrite: bool = False,
        resume: bool = False,
    ):
        if shard_rows < 1:
            raise UsageError(f"--shard-rows {shard_rows}: must be at least 1")
        if overwrite and resume:
            raise UsageError("--overwrite starts the store again and --resume continues it: give one")
        self.folder = Path(folder)
        self.settings = dict(settings)
        self.shard_rows = shard_rows
        self.shards: list[dict[str, Any]] = []
        self.tracks: list[dict[str, Any]] = []
        self.videos: list[dict[str, Any]] = []
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._rows_in_shard = 0
        self._track: dict[str, Any] | None = None
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"--out {self.folder}: exists and is not a folder")
        is_store = (self.folder / MANIFEST).exists() or (self.folder / PROGRESS).exists()
        if self.folder.is_dir() and any(self.folder.iterdir()):
            if resume and is_store:
                self._reopen()
                return
            if resume and any(self.folder.glob("shard-*.arrow")):
                raise UsageError(
                    f"--resume: {self.folder} holds a prepare interrupted before its first checkpoint: "
                    "nothing to resume (pass --overwrite to start again)"
                )
            if resume:
                raise UsageError(f"--resume: {self.folder} is not a crop store")
            if not overwrite:
                if (self.folder / PROGRESS).exists():
                    what = "holds an unfinished prepare (pass --resume to continue it, --overwrite to start again)"
                else:
                    add = ", --resume to add to it" if is_store else ""
                    what = f"is not empty (pass --overwrite to replace its store{add})"
                raise UsageError(f"--out {self.folder}: folder {what}")
            if not is_store and not any(self.folder.glob("shard-*.arrow")):
                raise UsageError(f"--out {self.folder}: not a crop store; refusing to empty it")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _reopen(self) -> None:
        """Continue from the last checkpoint (``progress.json``, else the finished manifest)."""
        path = self.folder / PROGRESS
        if not path.exists():
            path = self.folder / MANIFEST
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--resume: {path}: unreadable ({exc}); pass --overwrite to start again") from None
        if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
            raise UsageError(f"--resume: {path}: not a {FORMAT} version {FORMAT_VERSION}")
        before = {k: v for k, v in state.get("settings", {}).items() if k != "crop"}
        if before != self.settings or state.get("settings", {}).get("crop", CROP_FUNCTION) != CROP_FUNCTION:
            changed = sorted(k for k in before.keys() | self.settings.keys() if before.get(k) != self.settings.get(k))
            raise UsageError(
                f"--resume: {self.folder} was prepared with other settings ({', '.join(changed) or 'crop function'}: "
                f"{', '.join(f'{before.get(k)!r} then' for k in changed)} now "
                f"{', '.join(repr(self.settings.get(k)) for k in changed)}); pass --overwrite to start again"
            )
        self.shards, self.tracks, self.videos = state["shards"], state["tracks"], state["videos"]
        listed = {shard["file"] for shard in self.shards}
        # Rows written after the checkpoint (a shard never closed, or one the checkpoint did not
        # list) belong to inputs that will be done again; spill files of a killed run go too.
        for stale in [*self.folder.glob("shard-*.arrow"), *self.folder.glob("crops-*.u8")]:
            if stale.name not in listed:
                stale.unlink()

    @property
    def done(self) -> dict[str, dict[str, Any]]:
        """The input records this store already has, by input name (from a resumed checkpoint)."""
        return {record["video"]: record for record in self.videos}

    def forget(self, name: str) -> None:
        """Drop input ``name``'s record and its tracks (before doing it again); its rows stay in
        their shards, unlisted."""
        self.videos = [v for v in self.videos if v["video"] != name]
        self.tracks = [t for t in self.tracks if t.get("input", t["video"]) != name]

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
            return
        # Interrupted (Ctrl-C, or an error outside any one input): keep what is complete, so that
        # --resume goes on from here. A track being written is dropped with its input.
        self._track = None
        try:
            self.checkpoint()
        except Exception:  # noqa: BLE001 (the original exception is the one to report)
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def _open_shard(self) -> None:
        name = f"shard-{len(self.shards):05d}.arrow"
        self._writer = pa.ipc.new_file(str(self.folder / name), SCHEMA)
        self.shards.append({"file": name, "rows": 0})
        self._rows_in_shard = 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            shard = self.shards[-1]
            shard["rows"] = self._rows_in_shard
            shard["bytes"] = (self.folder / shard["file"]).stat().st_size

    def add_track(self, meta: Mapping[str, Any], columns: Mapping[str, np.ndarray]) -> None:
        """One track's rows at once: ``begin_track(meta)``, ``append(columns)``, ``end_track()``."""
        self.begin_track(meta)
        self.append(columns)
        self.end_track()

    def begin_track(self, meta: Mapping[str, Any]) -> None:
        """Start a track. ``meta``: video, track, label, split, valid_labels, missing, and
        ``input`` (the input record it comes from, when that is not named as ``video``)."""
        if self._track is not None:
            raise RuntimeError("begin_track: the previous track was not ended")
        self._track = {
            "input": meta.get("input", meta["video"]),
            "video": meta["video"],
            "track": int(meta["track"]),
            "label": meta.get("label"),
            "split": meta.get("split"),
            "rows": 0,
            "labelled": 0,
            "valid_labels": int(meta.get("valid_labels", 0)),
            "missing": int(meta.get("missing", 0)),
            "pieces": [],
        }

    def append(self, columns: Mapping[str, np.ndarray]) -> None:
        """The track's next rows, in frame order: frame, source_frame (int), crop (uint8 (n, 96,
        96, 3)), and optionally x1, y1, x2, y2, valence, arousal (float, NaN for null).
        Rows go to disk a record batch at a time: a long track never sits in memory."""
        track = self._track
        if track is None:
            raise RuntimeError("append: no track begun")
        crops = columns["crop"]
        n = len(crops)
        if crops.dtype != np.uint8 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
            raise ValueError(f"crops must be uint8 (n, {CROP_SIZE}, {CROP_SIZE}, 3), got {crops.dtype} {crops.shape}")
        values = {c: np.asarray(columns.get(c, np.full(n, np.nan)), np.float32) for c in FLOAT_COLUMNS}
        track["labelled"] += int((np.isfinite(values["valence"]) & np.isfinite(values["arousal"])).sum())
        done = 0
        while done < n:
            if self._writer is None or self._rows_in_shard >= self.shard_rows:
                self._close_shard()
                self._open_shard()
            take = min(n - done, self.shard_rows - self._rows_in_shard, BATCH_ROWS)
            part = slice(done, done + take)
            crop_bytes = np.ascontiguousarray(crops[part]).tobytes()
            batch = pa.record_batch(
                [
                    pa.array([track["video"]] * take, pa.string()),
                    pa.array(np.full(take, track["track"], np.int32)),
                    pa.array(np.asarray(columns["frame"][part], np.int32)),
                    pa.array(np.asarray(columns["source_frame"][part], np.int32)),
                    pa.FixedSizeBinaryArray.from_buffers(pa.binary(CROP_BYTES), take, [None, pa.py_buffer(crop_bytes)]),
                    *(pa.array(values[c][part], pa.float32(), mask=np.isnan(values[c][part])) for c in FLOAT_COLUMNS),
                ],
                schema=SCHEMA,
            )
            self._writer.write_batch(batch)
            shard = len(self.shards) - 1
            pieces = track["pieces"]
            if pieces and pieces[-1][0] == shard and pieces[-1][2] == self._rows_in_shard:
                pieces[-1][2] += take
            else:
                pieces.append([shard, self._rows_in_shard, self._rows_in_shard + take])
            self._rows_in_shard += take
            track["rows"] += take
            done += take

    def end_track(self) -> None:
        """Finish the track begun last. A track without rows is listed only with a label file
        (track -1: no face track matched it), so that its valid frames count as missing."""
        track, self._track = self._track, None
        if track is not None and (track["rows"] or track["label"]):
            self.tracks.append(track)

    def discard_track(self) -> None:
        """Drop the track begun last (its input failed): rows it wrote stay in the shard, unlisted."""
        self._track = None

    def add_video(self, record: Mapping[str, Any]) -> None:
        """A result row for one input: video, status (ok | failed), error, frames, labels, seconds."""
        self.videos.append(dict(record))

    def _state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "affbatch_version": affbatch.__version__,
            "settings": {**self.settings, "crop": CROP_FUNCTION},
            "rows": sum(s["rows"] for s in self.shards),
            "shards": self.shards,
            "tracks": self.tracks,
            "videos": self.videos,
        }

    def checkpoint(self) -> None:
        """Make every input added so far durable: close the shard being written and replace
        ``progress.json``. Call between inputs (not inside a track)."""
        if self._track is not None:
            raise RuntimeError("checkpoint: a track is being written")
        self._close_shard()
        write_json_atomically(self.folder / PROGRESS, self._state())

    def close(self) -> Path:
        self._close_shard()
        state = self._state()
        # progress first, so that a crash before the manifest is written resumes from all of it.
        if (self.folder / PROGRESS).exists():
            write_json_atomically(self.folder / PROGRESS, state)
        write_json_atomically(self.folder / MANIFEST, state)
        (self.folder / PROGRESS).unlink(missing_ok=True)
        return self.folder


def write_json_atomically(path: Path, data: Any) -> None:
    """The store's JSON files: indented by one, for people who read them."""
    files.write_json_atomically(path, data, indent=1)


class _Shard:
    """One memory-mapped shard: its record batches and the row where each begins."""

    def __init__(self, path: Path):
        self.reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        self.batches = [self.reader.get_batch(i) for i in range(self.reader.num_record_batches)]
        self.starts = np.cumsum([0] + [b.num_rows for b in self.batches])

    def arrays(self, column: str, start: int, stop: int) -> list[pa.Array]:
        """The pieces of ``column`` covering rows [start, stop), zero-copy slices."""
        out = []
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        for b in range(max(first, 0), len(self.batches)):
            b0 = int(self.starts[b])
            if b0 >= stop:
                break
            lo, hi = max(start, b0) - b0, min(stop, int(self.starts[b + 1])) - b0
            out.append(self.batches[b].column(column).slice(lo, hi - lo))
        return out


class CropStore:
    """A store opened for reading: ``tracks``, and rows of a track by position (memory-mapped)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not self.folder.is_dir():
            raise StoreError(f"{self.folder}: no such crop store (affbatch-train prepare writes one)")
        if not path.is_file():
            unfinished = (self.folder / PROGRESS).exists() or any(self.folder.glob("shard-*.arrow"))
            what = "an unfinished prepare (continue it: prepare ... --resume)" if unfinished else "not a crop store"
            raise StoreError(f"{self.folder}: no {MANIFEST}: {what}")
        try:
            self.manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable ({exc})") from None
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{path}: format {self.manifest.get('format')!r} version {self.manifest.get('format_version')!r}; "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        self.settings: dict[str, Any] = self.manifest.get("settings", {})
        self.tracks = [
            TrackEntry(
                index=i,
                video=t["video"],
                track=t["track"],
                label=t.get("label"),
                split=t.get("split"),
                rows=t["rows"],
                labelled=t.get("labelled", 0),
                valid_labels=t.get("valid_labels", 0),
                missing=t.get("missing", 0),
                pieces=tuple(tuple(p) for p in t["pieces"]),
            )
            for i, t in enumerate(self.manifest["tracks"])
        ]
        self._shards: dict[int, _Shard] = {}
        self._labels: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"CropStore({str(self.folder)!r}, {len(self.tracks)} tracks, {self.rows} rows)"

    @property
    def rows(self) -> int:
        return int(self.manifest.get("rows", 0))

    @property
    def splits(self) -> list[str | None]:
        return sorted({t.split for t in self.tracks}, key=lambda s: (s is None, s or ""))

    def select(self, split: str | None = None, labelled: bool = True) -> list[TrackEntry]:
        """Tracks of ``split`` (all when None); with ``labelled``, only those with a label file."""
        if split is not None and split not in self.splits:
            known = ", ".join(str(s) for s in self.splits)
            raise UsageError(f"{self.folder}: no split {split!r} in this store (it has: {known})")
        return [t for t in self.tracks if (split is None or t.split == split) and (not labelled or t.label)]

    def _shard(self, index: int) -> _Shard:
        shard = self._shards.get(index)
        if shard is None:
            path = self.folder / self.manifest["shards"][index]["file"]
            try:
                shard = self._shards[index] = _Shard(path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise StoreError(f"{path}: cannot read shard ({exc})") from None
        return shard

    def _arrays(self, entry: TrackEntry, column: str, start: int, stop: int) -> Iterable[pa.Array]:
        """Zero-copy pieces of ``column`` for track positions [start, stop)."""
        if not 0 <= start <= stop <= entry.rows:
            raise IndexError(f"rows [{start}, {stop}) outside track {entry.name} of {entry.rows} rows")
        offset = 0
        for shard, s0, s1 in entry.pieces:
            lo, hi = max(start, offset), min(stop, offset + s1 - s0)
            if lo < hi:
                yield from self._shard(shard).arrays(column, s0 + lo - offset, s0 + hi - offset)
            offset += s1 - s0

    def crops(self, entry: TrackEntry, start: int = 0, stop: int | None = None, out: np.ndarray | None = None):
        """uint8 (n, 96, 96, 3) crops of track positions [start, stop), copied into ``out`` if given."""
        stop = entry.rows if stop is None else stop
        if out is None:
            out = np.empty((stop - start, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        flat = out.reshape(len(out), CROP_BYTES)
        at = 0
        for arr in self._arrays(entry, "crop", start, stop):
            data = np.frombuffer(
                arr.buffers()[1], np.uint8, count=len(arr) * CROP_BYTES, offset=arr.offset * CROP_BYTES
            )
            flat[at : at + len(arr)] = data.reshape(len(arr), CROP_BYTES)
            at += len(arr)
        return out

    def column(self, entry: TrackEntry, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A scalar column of track positions [start, stop) as NumPy (float columns: NaN for null)."""
        stop = entry.rows if stop is None else stop
        parts = list(self._arrays(entry, name, start, stop))
        if not parts:
            return np.zeros(0, np.float32 if name in FLOAT_COLUMNS else np.int64)
        arr = pa.concat_arrays(parts)
        if name in FLOAT_COLUMNS:
            return pc.fill_null(arr, float("nan")).to_numpy(zero_copy_only=False).astype(np.float32)
        return arr.to_numpy(zero_copy_only=False)

    def labels(self, entry: TrackEntry) -> np.ndarray:
        """float32 (rows, 2) valence, arousal of the whole track; NaN where unlabelled. Cached."""
        labels = self._labels.get(entry.index)
        if labels is None:
            labels = np.stack([self.column(entry, "valence"), self.column(entry, "arousal")], axis=1)
            self._labels[entry.index] = labels
        return labels


@dataclass
class StoreSummary:
    """What ``prepare`` did: the store, and per input ok/failed."""

    folder: Path
    videos: list[dict[str, Any]] = field(default_factory=list)
    tracks: int = 0
    rows: int = 0
    skipped: list[str] = field(default_factory=list)  # inputs without a label file
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [v for v in self.videos if v["status"] != "ok"]
