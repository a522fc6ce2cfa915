"""sha256 of a file, read in blocks (weights, checkpoints and videos can be large)."""

from __future__ import annotations

import hashlib
import os

#: Bytes read at a time: large enough for disk throughput, small enough to stay out of the way.
BLOCK = 1 << 22


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
