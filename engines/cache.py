"""On-disk cache of exported ONNX graphs, keyed by everything that changes the graph.

Layout: ``<cache root>/onnx/<key>.onnx``, ``<key>.onnx.json`` (what it is, for ``affbatch
engines list``) and ``<key>.onnx.sha256`` (the file's digest, written last). The root is
``$AFFBATCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/affbatch``, else ``~/.cache/affbatch``. Files are
written to a temporary name and renamed, so a killed export leaves nothing a later run would
take; a file whose digest does not match (truncated, edited, half-written by a crash of another
kind) is exported again. Processes exporting the same graph take turns (``<key>.onnx.lock``):
the second finds the first's file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from engines.locking import file_lock, write_atomically
from engines.onnx_export import OPSET, DynamicAxes, export_onnx

log = logging.getLogger("engines")


def cache_root() -> Path:
    """Root of affbatch's caches (the ONNX graphs go in its ``onnx/`` folder)."""
    if os.environ.get("AFFBATCH_CACHE_DIR"):
        return Path(os.environ["AFFBATCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "affbatch"


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # defined in a REPL or a C extension: its name has to do
        return f"{cls.__module__}.{cls.__qualname__}"


def cache_key(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: DynamicAxes | None,
    extra: str = "",
) -> str:
    """sha256 (hex) of what the exported graph depends on.

    The weights (every state-dict tensor's name, dtype, shape and bytes), the module's class and
    the source code of every class in it (so that editing a forward invalidates the cache), its
    repr (hyperparameters), the example inputs' shapes and dtypes, the names and dynamic axes,
    the torch version, the opset, and ``extra`` (e.g. the caller's version).
    """
    h = hashlib.sha256()

    def add(*parts: object) -> None:
        for part in parts:
            data = part if isinstance(part, bytes | memoryview) else str(part).encode()
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)

    add("class", f"{type(module).__module__}.{type(module).__qualname__}", "repr", repr(module))
    for cls in sorted({type(m) for m in module.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        add("source", _class_source(cls))
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        add("tensor", name, t.dtype, tuple(t.shape), memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    add("inputs", [(tuple(t.shape), str(t.dtype)) for t in example_inputs])
    axes = _axes_json(dynamic_axes)
    add("names", list(input_names), list(output_names), "axes", json.dumps(axes, sort_keys=True))
    add("torch", torch.__version__, "opset", OPSET, "extra", extra)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def onnx_sha256(path: Path) -> str:
    """sha256 of a cached graph, from its digest file when there is one (it was checked on the way in)."""
    digest_path = path.with_name(path.name + ".sha256")
    if digest_path.exists():
        return digest_path.read_text().strip()
    return file_sha256(path)


def _intact(path: Path, quiet: bool = False) -> bool:
    digest_path = path.with_name(path.name + ".sha256")
    if not (path.exists() and digest_path.exists()):
        return False
    if digest_path.read_text().strip() == file_sha256(path):
        return True
    if not quiet:
        log.warning("cached ONNX graph %s does not match its digest: exporting it again", path)
    return False


def _axes_json(dynamic_axes: DynamicAxes | None) -> dict:
    axes = dynamic_axes or {}
    return {k: {str(a): n for a, n in v.items()} if hasattr(v, "items") else list(v) for k, v in axes.items()}


def cached_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: DynamicAxes | None = None,
    cache_dir: Path | None = None,
    extra: str = "",
) -> Path:
    """Path of the ONNX graph of ``module``: the cached one if intact, else exported now."""
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(module, example_inputs, input_names, output_names, dynamic_axes, extra)
    path = folder / f"{key}.onnx"
    if _intact(path):
        log.debug("ONNX cache hit: %s", path)
        return path
    with file_lock(folder / f"{key}.onnx.lock"):
        if _intact(path, quiet=True):  # exported by another process while this one waited
            return path
        log.info("exporting %s to ONNX: %s", type(module).__name__, path)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        write_atomically(
            path, lambda tmp: export_onnx(module, example_inputs, tmp, input_names, output_names, dynamic_axes)
        )
        about = {
            "module": f"{type(module).__module__}.{type(module).__qualname__}",
            "inputs": {n: [list(t.shape), str(t.dtype)] for n, t in zip(input_names, example_inputs, strict=False)},
            "outputs": list(output_names),
            "dynamic_axes": _axes_json(dynamic_axes),
            "opset": OPSET,
            "torch": torch.__version__,
            "extra": extra,
            "created": time.time(),
        }
        write_atomically(path.with_name(path.name + ".json"), lambda tmp: tmp.write_text(json.dumps(about, indent=1)))
        digest = file_sha256(path)
        write_atomically(path.with_name(path.name + ".sha256"), lambda tmp: tmp.write_text(digest + "\n"))
    return path
