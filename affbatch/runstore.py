"""Per-video results of a ``score`` run, committed one by one, assembled into OUT at the end.

Each scored video is written to ``OUT.parts/<key>.arrow`` and then described by
``OUT.parts/<key>.json`` (its manifest row, the file's fingerprint and the run's settings). Both
are written to a temporary name and renamed, so a killed run leaves only complete results, and
the JSON is written last, so it vouches for the Arrow file. ``--resume`` reuses a result whose
fingerprint (file content) and settings match; the rest is computed again. OUT and its manifest
are rewritten, again by renaming, only when every input has a result.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from affbatch.errors import UsageError
from affbatch.inputs import InputVideo
from affbatch.traces import (
    MANIFEST_SCHEMA,
    TRACE_SCHEMA,
    manifest_path,
    with_metadata,
    write_batches_atomically,
    write_table_atomically,
)

#: Bumped when a stored result can no longer be reused by a newer version.
STORE_FORMAT = 1

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a file's content. ``sha256`` is trusted while size and mtime are unchanged,
    as git trusts its index; otherwise the file is hashed again."""

    size: int
    mtime_ns: int
    sha256: str


@dataclass
class ManifestRow:
    video: str
    status: str  # "ok" | "failed"
    error: str | None = None
    frames: int | None = None
    native_fps: float | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    seconds: float | None = None


def fingerprint(path: Path, known: Fingerprint | None = None) -> Fingerprint:
    st = os.stat(path)
    if known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return Fingerprint(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=digest.hexdigest())


class RunStore:
    """The parts folder of one OUT. Holds an exclusive lock while open."""

    def __init__(self, out: Path, settings: dict, resume: bool) -> None:
        self.out = Path(out)
        self.dir = self.out.with_name(self.out.name + ".parts")
        self.settings = {"store_format": STORE_FORMAT, **settings}
        if not self.out.parent.is_dir():
            raise UsageError(f"--out {self.out}: folder {self.out.parent} does not exist")
        # The lock lives beside OUT, not in the parts folder, which a fresh run removes.
        self._lock = open(self.out.with_name(f".{self.out.name}.lock"), "w")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise UsageError(f"--out {self.out}: another affbatch run is writing it") from None
        if self.dir.exists() and not resume:
            shutil.rmtree(self.dir)  # an earlier run's leftovers: not asked to reuse them
        self.dir.mkdir(exist_ok=True)

    def close(self) -> None:
        self._lock.close()

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
        if record["row"]["status"] != "ok" or not (self.dir / f"{self._key(video)}.arrow").exists():
            return None
        known = Fingerprint(**record["fingerprint"])
        try:
            current = fingerprint(video.path, known)
        except OSError:
            return None
        if current.sha256 != known.sha256:
            return None
        return ManifestRow(**record["row"]), current

    def commit(self, video: InputVideo, row: ManifestRow, table: pa.Table | None, print_: Fingerprint | None) -> None:
        """Store one video's outcome: the traces first, then the record that vouches for them."""
        key = self._key(video)
        if table is not None:
            write_table_atomically(table, self.dir / f"{key}.arrow")
        record = {
            "name": video.name,
            "settings": self.settings,
            "fingerprint": asdict(print_) if print_ else None,
            "row": asdict(row),
        }
        tmp = self.dir / f".{key}.json.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.dir / f"{key}.json")

    def assemble(self, videos: list[InputVideo], metadata: dict) -> list[ManifestRow]:
        """Write OUT and its manifest from the stored results, in input order."""
        rows: list[ManifestRow] = []
        ok_parts: list[Path] = []
        for video in videos:
            record = self._record(video)
            if record is None or record.get("name") != video.name:
                raise RuntimeError(f"no stored result for {video.name}")  # a bug, not bad input
            row = ManifestRow(**record["row"])
            rows.append(row)
            if row.status == "ok":
                ok_parts.append(self.dir / f"{self._key(video)}.arrow")

        schema = with_metadata(TRACE_SCHEMA, metadata)
        write_batches_atomically(schema, _batches(ok_parts), self.out)
        manifest = pa.Table.from_pylist([asdict(r) for r in rows], schema=MANIFEST_SCHEMA)
        manifest = manifest.replace_schema_metadata(with_metadata(MANIFEST_SCHEMA, metadata).metadata)
        write_table_atomically(manifest, manifest_path(self.out))
        return rows

    def discard(self) -> None:
        """Remove the parts folder (after a run in which every video was scored)."""
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _batches(parts: list[Path]):
    for part in parts:
        with pa.memory_map(str(part), "r") as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
