"""Reading what affbatch writes with pyarrow alone (not affbatch's own reader), so tests check
the files a user's tools see."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc


def read(path: Path) -> pa.Table:
    """An Arrow IPC file, whole."""
    with pa.memory_map(str(path)) as source:
        return ipc.open_file(source).read_all()


def manifest_path(out: Path) -> Path:
    """The manifest beside a traces file, named as the contract says (``t.arrow`` -> ``t.videos.arrow``)."""
    return out.with_name(out.name.replace(".arrow", ".videos.arrow"))
