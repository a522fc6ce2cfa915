"""What the caches hold (``affbatch engines list``) and removing it (``affbatch engines clear``).

Kinds: ``onnx`` (exported graphs, ``<root>/onnx``), ``tensorrt`` (built engines,
``<root>/tensorrt``), ``timing`` (TensorRT timing caches, beside the engines), ``openvino``
(compiled OpenVINO models, ``<root>/openvino``) and ``autotune`` (``auto``'s measured choice
per model and CPU, ``<root>/autotune``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engines.cache import cache_root, file_sha256
from engines.engine_cache import SUFFIX, CorruptEntry, read_entry, read_header
from engines.locking import file_lock

KINDS = ("onnx", "tensorrt", "timing", "openvino", "autotune")
#: Temporaries older than this are leftovers of killed processes, not writes in progress.
STALE_TMP_S = 3600


@dataclass
class Entry:
    kind: str
    path: Path
    key: str
    bytes: int
    created: float
    fields: dict = field(default_factory=dict)
    #: None: intact (or not checked); else what is wrong with it.
    problem: str | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.created)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "key": self.key,
            "path": str(self.path),
            "bytes": self.bytes,
            "created": self.created,
            "age_s": round(self.age_s, 1),
            "fields": self.fields,
            "problem": self.problem,
        }


def _onnx_entries(folder: Path, verify: bool) -> list[Entry]:
    found = []
    for path in sorted(folder.glob("*.onnx")):
        sidecars = [path.with_name(path.name + s) for s in (".json", ".sha256")]
        files = [path, *(p for p in sidecars if p.exists())]
        about, problem = {}, None
        try:
            about = json.loads(sidecars[0].read_text()) if sidecars[0].exists() else {}
        except ValueError:
            problem = "description is not valid JSON"
        if not sidecars[1].exists():
            problem = "no digest (export unfinished or interrupted)"
        elif verify and sidecars[1].read_text().strip() != file_sha256(path):
            problem = "does not match its digest"
        created = about.get("created", path.stat().st_mtime)
        fields = {k: about[k] for k in ("module", "inputs", "opset", "torch", "extra") if k in about}
        size = sum(p.stat().st_size for p in files)
        found.append(Entry("onnx", path, path.stem, size, created, fields, problem, files))
    return found


def _tensorrt_entries(folder: Path, verify: bool, kind: str = "tensorrt") -> list[Entry]:
    found = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        header, problem = {}, None
        try:
            header, _ = read_header(path)
            if verify:
                read_entry(path)
        except (CorruptEntry, OSError) as exc:
            problem = str(exc)
        created = header.get("created", path.stat().st_mtime)
        found.append(
            Entry(kind, path, path.stem, path.stat().st_size, created, header.get("fields", {}), problem, [path])
        )
    for path in sorted(folder.glob("timing-*.cache")):
        st = path.stat()
        found.append(Entry("timing", path, path.stem, st.st_size, st.st_mtime, {}, None, [path]))
    return found


def _autotune_entries(folder: Path) -> list[Entry]:
    found = []
    for path in sorted(folder.glob("*.json")):
        problem, record = None, {}
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            problem = "not valid JSON"
        fields = dict(record.get("fields", {})) | {k: record[k] for k in ("name", "choice", "timings") if k in record}
        created = record.get("created", path.stat().st_mtime)
        found.append(Entry("autotune", path, path.stem, path.stat().st_size, created, fields, problem, [path]))
    return found


def entries(root: Path | None = None, kinds: Iterable[str] | None = None, verify: bool = False) -> list[Entry]:
    """The cache entries under ``root`` (default: the cache root), of ``kinds`` (default: all).
    ``verify``: also hash every file (catches flipped bits; costs a read of everything)."""
    root = Path(root) if root is not None else cache_root()
    kinds = set(kinds or KINDS)
    if unknown := kinds - set(KINDS):
        raise ValueError(f"cache kinds {sorted(unknown)}: choose from {', '.join(KINDS)}")
    found: list[Entry] = []
    if "onnx" in kinds and (root / "onnx").is_dir():
        found += _onnx_entries(root / "onnx", verify)
    if kinds & {"tensorrt", "timing"} and (root / "tensorrt").is_dir():
        found += [e for e in _tensorrt_entries(root / "tensorrt", verify) if e.kind in kinds]
    if "openvino" in kinds and (root / "openvino").is_dir():
        found += [e for e in _tensorrt_entries(root / "openvino", verify, "openvino") if e.kind == "openvino"]
    if "autotune" in kinds and (root / "autotune").is_dir():
        found += _autotune_entries(root / "autotune")
    return found


def clear(
    root: Path | None = None, kinds: Iterable[str] | None = None, older_than_s: float | None = None
) -> tuple[list[Entry], list[Entry]]:
    """Remove entries (all, or of ``kinds``, or older than ``older_than_s``): (removed, skipped).

    An entry being built right now (its lock held by another process) is skipped. Lock files go
    with their entries: that is safe because readers trust only complete, renamed files.
    """
    removed, skipped = [], []
    root = Path(root) if root is not None else cache_root()
    for entry in entries(root, kinds):
        if older_than_s is not None and entry.age_s < older_than_s:
            continue
        lock = entry.path.with_name(entry.path.name + ".lock")
        with file_lock(lock, blocking=False) as held:
            if not held:
                skipped.append(entry)
                continue
            for path in entry.files:
                path.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        removed.append(entry)
    for folder in (root / "onnx", root / "tensorrt", root / "openvino", root / "autotune"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink(missing_ok=True)
    return removed, skipped
