"""Files written so that a crash never leaves half of one, and files known by their digest.

Every file affbatch and affbatch-train write for others to read (traces, manifests, run-store
records, checkpoints, crop stores, label files, split files) goes through :func:`atomic_path`:
the content is written to a temporary name beside the target, flushed to disk, and renamed
over the target, so a reader (or a resumed run) sees the old file or the complete new one.
Temporary names are ``.<target name>.<random>.tmp``, which is how leftovers of a killed run
are recognised and removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Bytes read at a time: large enough for disk throughput, small enough to stay out of the way.
BLOCK = 1 << 22


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in blocks (weights, checkpoints and videos can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_size(path: str | os.PathLike) -> int:
    """Bytes in the file; 0 when it cannot be read (its failure is reported where it is opened)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a file's content. ``sha256`` is trusted while size and mtime are unchanged,
    as git trusts its index; otherwise the file is hashed again."""

    size: int
    mtime_ns: int
    sha256: str


def fingerprint(path: str | os.PathLike, known: Fingerprint | None = None) -> Fingerprint:
    """The file's :class:`Fingerprint`; ``known`` is reused while size and mtime match it."""
    st = os.stat(path)
    if known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns:
        return known
    return Fingerprint(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=file_sha256(path))


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends without an
    exception, the file is flushed to disk (``fsync``) and renamed to ``path``. On an exception
    the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:  # on disk before the rename, so that a power cut leaves no empty file
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_json_atomically(path: str | os.PathLike, data: Any, indent: int | None = None) -> None:
    write_text_atomically(path, json.dumps(data, indent=indent) + ("\n" if indent is not None else ""))
