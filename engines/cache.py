"""On-disk cache of exported ONNX graphs, keyed by everything that changes the graph.

Layout: ``<cache root>/onnx/<key>.onnx`` and ``<key>.onnx.sha256`` (the file's digest, written
after it). The root is ``$AFFBATCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/affbatch``, else
``~/.cache/affbatch``. Files are written to a temporary name and renamed, so a killed export
leaves nothing a later run would take; a file whose digest does not match (truncated, edited,
half-written by a crash of another kind) is exported again.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

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
    dynamic_axes = dynamic_axes or {}
    axes = {
        k: {str(a): n for a, n in v.items()} if hasattr(v, "items") else list(v)
        for k, v in (dynamic_axes or {}).items()
    }
    add("names", list(input_names), list(output_names), "axes", json.dumps(axes, sort_keys=True))
    add("torch", torch.__version__, "opset", OPSET, "extra", extra)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _write_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    path, digest_path = folder / f"{key}.onnx", folder / f"{key}.onnx.sha256"
    if path.exists() and digest_path.exists():
        if digest_path.read_text().strip() == _file_sha256(path):
            log.debug("ONNX cache hit: %s", path)
            return path
        log.warning("cached ONNX graph %s does not match its digest: exporting it again", path)
    log.info("exporting %s to ONNX: %s", type(module).__name__, path)
    _write_atomically(
        path, lambda tmp: export_onnx(module, example_inputs, tmp, input_names, output_names, dynamic_axes)
    )
    _write_atomically(digest_path, lambda tmp: tmp.write_text(_file_sha256(path) + "\n"))
    return path
