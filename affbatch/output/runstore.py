"""Per-video results of a ``score`` run, committed one by one, assembled into OUT at the end.

Each scored video is written to ``OUT.parts/<key>.arrow`` and then described by
``OUT.parts/<key>.json`` (its manifest row, the file's fingerprint and the run's settings). Both
are written to a temporary name and renamed, so a killed run leaves only complete results, and
the JSON is written last, so it vouches for the Arrow file. ``--resume`` reuses a result whose
fingerprint (file content) and settings match; the rest is computed again. OUT and its manifest
are rewritten, again by renaming, only when every input has a result.

Once OUT is written, the results live there: each record then points at its rows in OUT (with
OUT's size and mtime) and the part files are removed, so a finished run costs no extra space
and ``--resume`` after it (say, with new videos added) still reuses every unchanged video, as
long as OUT itself is not replaced. A run without ``--resume`` starts from an empty folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from affbatch.errors import UsageError
from affbatch.files import Fingerprint, fingerprint, write_json_atomically
from affbatch.output.traces import (
    MANIFEST_SCHEMA,
    TRACE_SCHEMA,
    ManifestRow,
    manifest_path,
    with_metadata,
    write_batches_atomically,
    write_table_atomically,
)
from affbatch.video.inputs import InputVideo

#: Bumped when a stored result can no longer be reused by a newer version.
STORE_FORMAT = 1


class RunStore:
    """The parts folder of one OUT. Holds an exclusive lock while open."""

    def __init__(self, out: Path, settings: dict, resume: bool) -> None:
        self.out = Path(out)
        self.dir = self.out.with_name(self.out.name + ".parts")
        self.settings = {"store_format": STORE_FORMAT, **settings}
        self._old_out: pa.Table | None = None  # OUT as it was when the run started, if reused
        self._old_out_source = None
        if not self.out.parent.is_dir():
            raise UsageError(f"--out {self.out}: folder {self.out.parent} does not exist")
        # The lock lives beside OUT, not in the parts folder, which a fresh run removes.
        self._lock = open(self.out.with_name(f".{self.out.name}.lock"), "w")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise UsageError(
                f"--out {self.out}: another affbatch run is writing it; wait for it to finish, or choose another --out"
            ) from None
        if self.dir.exists() and not resume:
            shutil.rmtree(self.dir)  # an earlier run's leftovers: not asked to reuse them
        self.dir.mkdir(exist_ok=True)
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        """Half-written files of a killed run: nobody else writes them while we hold the lock."""
        stale = list(self.dir.glob(".*.tmp"))
        for target in (self.out, manifest_path(self.out)):
            stale += self.out.parent.glob(f".{glob.escape(target.name)}.*.tmp")
        for path in stale:
            with contextlib.suppress(OSError):
                path.unlink()

    def close(self) -> None:
        self._forget_previous_out()
        self._lock.close()

    def _forget_previous_out(self) -> None:
        self._old_out = None
        if self._old_out_source is not None:
            self._old_out_source.close()
            self._old_out_source = None

    def _key(self, video: InputVideo) -> str:
        return hashlib.sha256(video.name.encode()).hexdigest()[:24]

    def _record(self, video: InputVideo) -> dict | None:
        try:
            return json.loads((self.dir / f"{self._key(video)}.json").read_text())
        except (OSError, ValueError):
            return None

    def reusable(self, video: InputVideo) -> tuple[ManifestRow, Fingerprint] | None:
        """The stored result of ``video`` if it was scored from the same content with the same
        settings; None otherwise (also for stored failures: they are tried again)."""
        record = self._record(video)
        if not record or record.get("name") != video.name or record.get("settings") != self.settings:
            return None
        if record["row"]["status"] != "ok" or self._traces_of(video, record) is None:
            return None
        known = Fingerprint(**record["fingerprint"])
        try:
            current = fingerprint(video.path, known)
        except OSError:
            return None
        if current.sha256 != known.sha256:
            return None
        return ManifestRow(**record["row"]), current

    def _traces_of(self, video: InputVideo, record: dict):
        """Where the stored traces of ``video`` are: its part file, or its rows in OUT (after
        OUT was assembled, the part is dropped and the record points into OUT). None: nowhere."""
        part = self.dir / f"{self._key(video)}.arrow"
        if part.exists():
            return part
        where = record.get("in_out")
        table = self._previous_out(where.get("out") if where else None)
        if table is None:
            return None
        offset, rows = where["offset"], where["rows"]
        if offset < 0 or rows < 0 or offset + rows > table.num_rows:
            return None
        names = table.column("video")
        if rows and (names[offset].as_py() != video.name or names[offset + rows - 1].as_py() != video.name):
            return None
        return table.slice(offset, rows)

    def _previous_out(self, identity: dict | None) -> pa.Table | None:
        """OUT as the records that point into it knew it (same size and mtime), memory-mapped."""
        if not identity:
            return None
        try:
            st = os.stat(self.out)
        except OSError:
            return None
        if {"size": st.st_size, "mtime_ns": st.st_mtime_ns} != identity:
            return None
        if self._old_out is None:
            try:
                source = pa.memory_map(str(self.out), "r")
                self._old_out = pa.ipc.open_file(source).read_all()
            except (OSError, pa.ArrowInvalid):
                return None
            self._old_out_source = source
        return self._old_out

    def commit(self, video: InputVideo, row: ManifestRow, table: pa.Table | None, print_: Fingerprint | None) -> None:
        """Store one video's outcome: the traces first, then the record that vouches for them."""
        key = self._key(video)
        part = self.dir / f"{key}.arrow"
        if table is not None:
            write_table_atomically(table, part)
        else:
            part.unlink(missing_ok=True)  # an earlier run's traces of what now fails
        self._write_record(
            key,
            {
                "name": video.name,
                "settings": self.settings,
                "fingerprint": asdict(print_) if print_ else None,
                "row": asdict(row),
            },
        )

    def _write_record(self, key: str, record: dict) -> None:
        write_json_atomically(self.dir / f"{key}.json", record)

    def assemble(self, videos: list[InputVideo], metadata: dict) -> list[ManifestRow]:
        """Write OUT and its manifest from the stored results, in input order.

        Then the results live in OUT: each record is pointed at its rows there and the part
        files are removed, so that the folder holds small records only, and ``--resume``
        reuses videos of a finished run as long as OUT is not replaced.
        """
        rows: list[ManifestRow] = []
        records: list[dict] = []
        sources: list = []
        for video in videos:
            record = self._record(video)
            if record is None or record.get("name") != video.name:
                raise RuntimeError(f"no stored result for {video.name}")  # a bug, not bad input
            row = ManifestRow(**record["row"])
            rows.append(row)
            records.append(record)
            if row.status == "ok":
                source = self._traces_of(video, record)
                if source is None:
                    raise RuntimeError(f"the stored traces of {video.name} are missing")  # a bug
                sources.append(source)
            else:
                sources.append(None)

        counts: list[int] = []
        schema = with_metadata(TRACE_SCHEMA, metadata)
        write_batches_atomically(schema, _batches(sources, counts), self.out)
        manifest = pa.Table.from_pylist([asdict(r) for r in rows], schema=MANIFEST_SCHEMA)
        manifest = manifest.replace_schema_metadata(with_metadata(MANIFEST_SCHEMA, metadata).metadata)
        write_table_atomically(manifest, manifest_path(self.out))
        scored = [source is not None for source in sources]
        del sources  # slices of the previous OUT: let go of it
        self._forget_previous_out()

        # OUT now holds every result. Point the records at it, then drop the parts: a crash in
        # between leaves parts that are still used, or records that no longer match OUT.
        st = os.stat(self.out)
        identity = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        offset = 0
        for video, record, ok, count in zip(videos, records, scored, counts, strict=True):
            if not ok:
                continue
            record["in_out"] = {"offset": offset, "rows": count, "out": identity}
            offset += count
            self._write_record(self._key(video), record)
        for video, ok in zip(videos, scored, strict=True):
            if ok:
                (self.dir / f"{self._key(video)}.arrow").unlink(missing_ok=True)
        return rows


def _batches(sources: list, counts: list[int]):
    """The record batches of each source in turn (a part file or a slice of the previous OUT);
    appends the number of rows of each source, None ones included (0), to ``counts``."""
    for source in sources:
        n = 0
        if isinstance(source, Path):
            with pa.memory_map(str(source), "r") as f:
                reader = pa.ipc.open_file(f)
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    n += batch.num_rows
                    yield batch
        elif source is not None:
            for batch in source.to_batches():
                n += batch.num_rows
                yield batch
        counts.append(n)
