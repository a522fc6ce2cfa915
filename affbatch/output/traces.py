"""The Arrow files ``affbatch score`` writes: traces (one row per video, frame and face) and
the manifest (one row per input video). Columns and types are a contract (DESIGN.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from affbatch.files import atomic_path

TRACE_SCHEMA = pa.schema(
    [
        pa.field("video", pa.string(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("source_frame", pa.int32(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),
        pa.field("track", pa.int32()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
        pa.field("x2", pa.float32()),
        pa.field("y2", pa.float32()),
        pa.field("det_score", pa.float32()),
        pa.field("valence", pa.float32()),
        pa.field("arousal", pa.float32()),
    ]
)

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("video", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "ok" | "failed"
        pa.field("error", pa.string()),
        pa.field("frames", pa.int64()),
        pa.field("native_fps", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("seconds", pa.float64()),
    ]
)

#: A video's outcome in the manifest.
Status = Literal["ok", "failed"]


@dataclass
class ManifestRow:
    """One row of the manifest (``MANIFEST_SCHEMA``): a video's outcome. ``error`` is the
    reason of a failure, one line; the other fields are None for a failed video."""

    video: str
    status: Status
    error: str | None = None
    frames: int | None = None
    native_fps: float | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    seconds: float | None = None


#: Columns that hold a face; all null in the one row of a frame without a face.
FACE_COLUMNS = ("track", "x1", "y1", "x2", "y2", "det_score", "valence", "arousal")
#: The affect model's columns; null also on a face row where no affect model ran.
AFFECT_COLUMNS = ("valence", "arousal")


def manifest_path(out: Path) -> Path:
    """``traces.arrow`` -> ``traces.videos.arrow``, next to it."""
    out = Path(out)
    stem = out.name[: -len(".arrow")] if out.name.endswith(".arrow") else out.name
    return out.with_name(f"{stem}.videos.arrow")


def frames_table(
    video: str,
    source_frame: np.ndarray,
    time_s: np.ndarray,
    faces: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """The traces of one video.

    Args:
        video: the ``video`` column's value.
        source_frame, time_s: per output frame k (row k when there are no faces).
        faces: optional face rows, columns ``frame`` (output index, int) plus ``FACE_COLUMNS``;
            a frame listed there gets one row per face (in the order given), the others one row
            of nulls; NaN valence or arousal is written as null.
    """
    n = len(source_frame)
    frame = np.arange(n, dtype=np.int32)
    columns: dict[str, pa.Array] = {}
    if faces is None or len(faces.get("frame", ())) == 0:
        columns = {
            "frame": pa.array(frame),
            "source_frame": pa.array(np.asarray(source_frame, np.int32)),
            "time_s": pa.array(np.asarray(time_s, np.float64)),
        }
        for name in FACE_COLUMNS:
            columns[name] = pa.nulls(n, TRACE_SCHEMA.field(name).type)
    else:
        face_frame = np.asarray(faces["frame"], np.int64)
        empty = np.ones(n, bool)
        empty[face_frame] = False
        empty_frames = np.flatnonzero(empty)
        rows_frame = np.concatenate([face_frame, empty_frames])
        order = np.argsort(rows_frame, kind="stable")
        rows_frame = rows_frame[order]
        valid = np.concatenate([np.ones(len(face_frame), bool), np.zeros(len(empty_frames), bool)])[order]
        columns = {
            "frame": pa.array(rows_frame.astype(np.int32)),
            "source_frame": pa.array(np.asarray(source_frame, np.int32)[rows_frame]),
            "time_s": pa.array(np.asarray(time_s, np.float64)[rows_frame]),
        }
        for name in FACE_COLUMNS:
            kind = TRACE_SCHEMA.field(name).type.to_pandas_dtype()
            values = np.concatenate([np.asarray(faces[name], kind), np.zeros(len(empty_frames), kind)])[order]
            missing = ~valid
            if name in AFFECT_COLUMNS:  # a face without an affect model's output (NaN): null
                missing |= np.isnan(values)
            columns[name] = pa.array(values, mask=missing)
    columns = {"video": pa.array([video] * len(columns["frame"]), pa.string()), **columns}
    return pa.Table.from_pydict(columns, schema=TRACE_SCHEMA)


def with_metadata(schema: pa.Schema, metadata: Mapping[str, object]) -> pa.Schema:
    """Schema metadata as UTF-8 strings (JSON for anything that is not a string); None is left out."""
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items() if v is not None}
    return schema.with_metadata(encoded)


def write_table_atomically(table: pa.Table, path: Path) -> None:
    """Write an Arrow IPC file so that ``path`` is either absent/old or complete."""
    write_batches_atomically(table.schema, table.to_batches(), path)


def write_batches_atomically(schema: pa.Schema, batches: Iterable[pa.RecordBatch], path: Path) -> None:
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def read_table(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def read_traces(path: Path, needed: Iterable[str]) -> pa.Table:
    """A traces file with at least the ``needed`` columns; a missing, foreign or older file is
    a one-line :class:`AffbatchError` naming it."""
    from affbatch.errors import AffbatchError

    path = Path(path)
    try:
        table = read_table(path)
    except FileNotFoundError:
        raise AffbatchError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AffbatchError(f"{path}: is a folder, not a traces file") from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise AffbatchError(f"{path}: not an Arrow traces file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise AffbatchError(f"{path}: not a traces file: missing columns {', '.join(missing)}")
    return table
