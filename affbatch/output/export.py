"""``affbatch export``: traces into the forms the next tools read.

* ``parquet``: the traces and the manifest (``traces.parquet``, ``traces.videos.parquet``) with
  the same columns and types and the schema metadata (model, detector, fps, ...). DuckDB,
  Spark and polars read Parquet directly (DuckDB cannot read Arrow IPC files offline).
* ``csv``: the same columns with a header, empty cells for nulls; CSV has no place for
  metadata, so it goes to ``<stem>.metadata.json`` beside the file.
* ``abaw``: one Aff-Wild2 challenge file per video and person (``affbatch.output.abaw``).

``--smooth SECONDS`` smooths valence and arousal first (``affbatch.output.smoothing``) and
records the method and window in the metadata written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from affbatch.errors import AffbatchError, UsageError
from affbatch.files import atomic_path, write_json_atomically
from affbatch.output.abaw import FILL_CHOICES, AbawSummary, FillMethod, read_names, write_abaw
from affbatch.output.smoothing import Smoothing, smooth_table
from affbatch.output.traces import TRACE_SCHEMA, manifest_path, read_table, read_traces

ExportTarget = Literal["abaw", "parquet", "csv"]
TARGETS: tuple[ExportTarget, ...] = ("abaw", "parquet", "csv")
#: The metadata file an ABAW export writes into its folder (eval reads only ``*.txt`` there).
ABAW_METADATA = "affbatch-export.json"


@dataclass
class ExportOptions:
    """``affbatch export``'s options; defaults defined here once."""

    to: ExportTarget
    out: Path
    fill: FillMethod = "nearest"
    smooth: float | None = None  # seconds; None: no smoothing
    videos: Path | None = None  # where the scored videos are (ABAW from 30 fps traces)
    names: Path | None = None  # ABAW: the files to write (a list, or a folder of label files)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.to not in TARGETS:
            raise UsageError(f"--to {self.to!r}: choose one of {', '.join(TARGETS)}")
        if self.fill not in FILL_CHOICES:
            raise UsageError(f"--fill {self.fill!r}: choose one of {', '.join(FILL_CHOICES)}")
        if self.to != "abaw" and self.fill != "nearest":
            raise UsageError(f"--fill applies to --to abaw only (the {self.to} export keeps nulls as nulls)")
        if self.videos is not None and not Path(self.videos).is_dir():
            raise UsageError(f"--videos {self.videos}: not a folder")
        if self.to != "abaw" and (self.videos is not None or self.names is not None):
            raise UsageError(f"--videos and --names apply to --to abaw only, not --to {self.to}")
        if self.names is not None and not Path(self.names).exists():
            raise UsageError(f"--names {self.names}: not found")


@dataclass
class ExportSummary:
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video, why)
    abaw: AbawSummary | None = None


def export(traces: Path, options: ExportOptions) -> ExportSummary:
    traces = Path(traces)
    table = read_traces(traces, TRACE_SCHEMA.names)
    metadata = _metadata(table)
    smoothing = Smoothing(options.smooth) if options.smooth is not None else None
    if smoothing is not None:
        table = smooth_table(table, smoothing)
        metadata["smoothing"] = json.dumps(smoothing.metadata())
    manifest = _read_manifest(traces)
    summary = ExportSummary()
    if manifest is None:
        summary.notes.append(f"no manifest next to {traces} ({manifest_path(traces).name}): traces only")
    if options.to == "abaw":
        _export_abaw(table, manifest, metadata, options, summary)
    else:
        _export_table(table.replace_schema_metadata(metadata), manifest, options, summary)
    return summary


def fps_mode(table: pa.Table) -> str:
    """"30" or "native", from the metadata ``affbatch score`` writes; without it, "native" when
    every output frame shows the source frame of its own index."""
    mode = (table.schema.metadata or {}).get(b"fps", b"").decode()
    if mode in ("30", "native"):
        return mode
    frame, source = table["frame"].to_numpy(), table["source_frame"].to_numpy()
    return "native" if np.array_equal(frame, source) else "30"


def sibling(out: Path, kind: str) -> Path:
    """``traces.parquet`` -> ``traces.<kind>.parquet`` next to it (``kind``: videos, metadata)."""
    return out.with_name(f"{out.stem}.{kind}{out.suffix}")


def _metadata(table: pa.Table) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}


def _read_manifest(traces: Path) -> pa.Table | None:
    path = manifest_path(traces)
    if not path.exists():
        return None
    try:
        manifest = read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise AffbatchError(f"{path}: not an Arrow manifest ({str(exc).splitlines()[0]})") from None
    if not {"video", "status", "frames"} <= set(manifest.column_names):
        raise AffbatchError(f"{path}: not a manifest: it has no video, status and frames columns")
    return manifest


def _export_table(table: pa.Table, manifest: pa.Table | None, options: ExportOptions, summary: ExportSummary) -> None:
    out = options.out
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; --to {options.to} writes a file, e.g. traces.{options.to}")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: its folder {out.parent} does not exist")
    tables = [(table, out)]
    if manifest is not None:
        tables.append((manifest, sibling(out, "videos")))
    for t, path in tables:
        _write(t, path, options.to)
        summary.written.append(path)
    if options.to == "csv":  # CSV keeps no metadata: beside it
        meta = sibling(out, "metadata").with_suffix(".json")
        write_json_atomically(meta, _metadata(table), indent=2)
        summary.written.append(meta)


def _write(table: pa.Table, path: Path, to: str) -> None:
    with atomic_path(path) as tmp:
        if to == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pv

            pv.write_csv(table, tmp)


def _export_abaw(
    table: pa.Table, manifest: pa.Table | None, metadata: dict, options: ExportOptions, summary: ExportSummary
) -> None:
    rows: dict[str, dict] = {}
    if manifest is not None:
        for row in manifest.to_pylist():
            rows[row["video"]] = row
    mode = fps_mode(table)
    names = read_names(options.names) if options.names is not None else None
    abaw = write_abaw(table, rows, mode, options.out, options.fill, options.videos, names)
    summary.abaw = abaw
    summary.notes += abaw.notes
    summary.failed += abaw.failed
    summary.written += [options.out / f"{f.name}.txt" for f in abaw.files]
    failed_videos = sorted(v for v, r in rows.items() if r.get("status") == "failed")
    for video in failed_videos:
        summary.failed.append((video, f"failed when scored ({rows[video].get('error')}): no file written"))
    record = {
        "traces": metadata,
        "fps": mode,
        "fill": options.fill,
        "names": str(options.names) if options.names is not None else None,
        "smoothing": json.loads(metadata["smoothing"]) if "smoothing" in metadata else None,
        "files": [f.to_json() for f in abaw.files],
        "failed": [{"video": v, "error": e} for v, e in summary.failed],
    }
    if options.out.is_dir():
        write_json_atomically(options.out / ABAW_METADATA, record, indent=2)
        summary.written.append(options.out / ABAW_METADATA)
