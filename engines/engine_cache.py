"""On-disk store of built engines (TensorRT plans): keyed, verified, shared between processes.

One file per entry, ``<folder>/<key>.engine``: :data:`MAGIC`, the header's length (8 bytes,
little-endian), a JSON header, then the payload. The header holds the key fields (what the
engine was built for: ONNX sha256, TensorRT version, GPU and compute capability, precision,
shape profile, ...), the payload's length and sha256, and when it was built. ``key`` is the
sha256 of the canonical JSON of the fields.

An entry is loaded only if the magic, the header's fields (equal to those asked for), the
payload's length and its sha256 all check; anything else (a truncated file, flipped bits, an
entry copied from another GPU, a format from another version) is built again, and the log says
why. Builders of the same key take turns on ``<key>.engine.lock``; entries are written to a
temporary name and renamed, so a reader never sees half a file. The builder is a plain callable
(``build() -> bytes``), so all of this is tested on CPU with a fake one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engines.locking import file_lock, write_atomically

log = logging.getLogger("engines")

MAGIC = b"AFFBATCH-ENGINE\x00"
FORMAT = 1
SUFFIX = ".engine"
_MAX_HEADER = 1 << 20


class CorruptEntry(Exception):
    """A cache entry that must not be loaded; the message says what is wrong with it."""


def entry_key(fields: Mapping[str, Any]) -> str:
    """sha256 (hex) of the key fields' canonical JSON."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def entry_path(folder: Path, fields: Mapping[str, Any]) -> Path:
    return Path(folder) / f"{entry_key(fields)}{SUFFIX}"


def _canonical(fields: Mapping[str, Any]) -> dict:
    """The fields as they read back from JSON (tuples become lists), for comparison."""
    return json.loads(json.dumps(fields, sort_keys=True))


def write_entry(path: Path, fields: Mapping[str, Any], payload: bytes, kind: str = "tensorrt") -> None:
    header = {
        "format": FORMAT,
        "kind": kind,
        "fields": _canonical(fields),
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "created": time.time(),
    }
    blob = json.dumps(header, sort_keys=True).encode()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(MAGIC + len(blob).to_bytes(8, "little") + blob)
            f.write(payload)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, write)


def read_header(path: Path) -> tuple[dict, int]:
    """(header, offset of the payload); raises CorruptEntry if the file is not an entry."""
    with open(path, "rb") as f:
        start = f.read(len(MAGIC) + 8)
        if len(start) < len(MAGIC) + 8 or not start.startswith(MAGIC):
            raise CorruptEntry("not an affbatch engine file (bad magic)")
        size = int.from_bytes(start[len(MAGIC) :], "little")
        if size > _MAX_HEADER:
            raise CorruptEntry(f"header length {size} is implausible")
        blob = f.read(size)
    try:
        header = json.loads(blob)
    except ValueError:
        raise CorruptEntry("header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CorruptEntry(f"format {header.get('format') if isinstance(header, dict) else '?'}, expected {FORMAT}")
    return header, len(MAGIC) + 8 + size


def read_entry(path: Path, fields: Mapping[str, Any] | None = None) -> bytes:
    """The payload of the entry at ``path``, checked; FileNotFoundError if there is none."""
    header, offset = read_header(path)
    if fields is not None:
        expected, stored = _canonical(fields), header.get("fields", {})
        if stored != expected:
            diff = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
            shown = ", ".join(f"{k}: {stored.get(k)!r} != {expected.get(k)!r}" for k in diff[:3])
            raise CorruptEntry(f"built for something else ({shown})")
    with open(path, "rb") as f:
        f.seek(offset)
        payload = f.read()
    if len(payload) != header.get("payload_bytes"):
        raise CorruptEntry(f"payload is {len(payload)} bytes, header says {header.get('payload_bytes')}")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise CorruptEntry("payload does not match its sha256")
    return payload


def load_or_build(
    folder: Path,
    fields: Mapping[str, Any],
    build: Callable[[], bytes],
    *,
    kind: str = "tensorrt",
    force: bool = False,
) -> tuple[bytes, bool]:
    """(payload, whether it was built now): the stored entry for ``fields`` if it checks, else ``build()``'s.

    ``force``: build even if an entry checks (e.g. the runtime refused to deserialize it).
    """
    path = entry_path(folder, fields)
    if not force:
        try:
            return read_entry(path, fields), False
        except FileNotFoundError:
            pass
        except CorruptEntry as exc:
            log.warning("engine cache entry %s is unusable (%s): building it again", path, exc)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        if not force:
            try:  # built by another process while this one waited for the lock
                return read_entry(path, fields), False
            except (FileNotFoundError, CorruptEntry):
                pass
        started = time.monotonic()
        payload = build()
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"engine builder returned {type(payload).__name__}, not bytes")
        payload = bytes(payload)
        write_entry(path, fields, payload, kind)
        log.info("built %s engine %s in %.1f s", kind, path.name, time.monotonic() - started)
    return payload, True
