"""Where ``score`` writes: checked before any work starts, and its failures said as what they
are (the user's disk or permissions, not a bug in affbatch).

Up front, before models load: OUT's folder is created if missing (as ffmpeg and most tools
do), a file is really written there (the only test that sees permissions, read-only mounts,
quotas and full disks alike), and the free space is compared with a rough need. Mid-run, a
write that fails keeps what is finished and says how to go on.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from affbatch.errors import AffbatchError, UsageError

#: Traces take about 100 bytes a frame (a row: names, numbers, a face box): 0.5-2.5 % of a
#: video coded at 1-5 Mbit/s (4-20 kB a frame at 30 fps). The rough need is 2 % of the input,
#: plus 16 KiB a video for its manifest row and records (about 12 KiB for a short clip), twice
#: over: the parts and OUT exist side by side while OUT is assembled.
OUTPUT_SHARE_OF_INPUT = 0.02
OUTPUT_BYTES_PER_VIDEO = 16 << 10

_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}
#: Errors of the place written to, not of affbatch.
DESTINATION_ERRNOS = frozenset(_REASONS)


class OutputFailure(AffbatchError):
    """OUT or its parts cannot be written mid-run (full disk, permissions changed): exit 1,
    finished videos kept for ``--resume``."""


def rough_need(input_bytes: int, videos: int) -> int:
    """Bytes a run over ``videos`` files of ``input_bytes`` in all is expected to write, at most
    (roughly; see ``OUTPUT_SHARE_OF_INPUT``)."""
    return 2 * (int(input_bytes * OUTPUT_SHARE_OF_INPUT) + videos * OUTPUT_BYTES_PER_VIDEO)


def prepare(out: Path, need: int) -> None:
    """Make OUT's folder, check that a file can be written in it and that about ``need`` bytes
    are free. Raises UsageError (one line, what to do) when not."""
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {out}: {_existing_file(folder)} is a file, not a folder") from None
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create folder {folder}: {_reason(exc)}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".affbatch-write-check-", dir=folder)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)  # a full disk or quota can accept the write and refuse the flush
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write in {folder}: {_reason(exc)}{_advice(exc)}") from None
    free = shutil.disk_usage(folder).free
    if free < need:
        raise UsageError(
            f"--out {out}: {_size(free)} free in {folder}, about {_size(need)} needed "
            "(traces take about 100 bytes a frame, twice while OUT is assembled): free space or choose another --out"
        )


@contextmanager
def writing(out: Path, parts: Path, finished: int) -> Iterator[None]:
    """Around a write into OUT or its parts: a failure of the place (full disk, permissions)
    becomes an :class:`OutputFailure` saying how many finished videos are kept."""
    try:
        yield
    except OSError as exc:
        code = _errno(exc)
        if code not in DESTINATION_ERRNOS:
            raise
        raise mid_run_failure(OSError(code, os.strerror(code), exc.filename), out, parts, finished) from None


def _errno(exc: OSError) -> int | None:
    """The errno of an OSError; pyarrow's carry it only in their message ("[Errno 28] ...")."""
    if exc.errno is not None:
        return exc.errno
    found = re.search(r"\[Errno (\d+)\]", str(exc))
    return int(found.group(1)) if found else None


def mid_run_failure(exc: OSError, out: Path, parts: Path, finished: int) -> OutputFailure:
    """The error for a write into OUT or its parts that failed after work started."""
    kept = f"{finished} finished video{'s' if finished != 1 else ''} {'are' if finished != 1 else 'is'} kept in {parts}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputFailure(f"{_reason(exc)}: {kept}; free space and rerun with --resume")
    where = exc.filename or out
    return OutputFailure(f"cannot write {where}: {_reason(exc)}: {kept}; fix it and rerun with --resume")


def _reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno) or (exc.strerror or str(exc)).lower()


def _advice(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "; choose an --out where you can write"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "; free space or choose another --out"
    return ""


def _existing_file(folder: Path) -> Path:
    """The first part of ``folder`` that exists and is not a folder."""
    for part in reversed([folder, *folder.parents]):
        if part.exists() and not part.is_dir():
            return part
    return folder


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
