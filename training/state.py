"""The state a training run resumes from: one safetensors file, replaced atomically.

Everything the next step depends on is in it, so that a resumed run makes *the same* updates as
one that was never stopped: model weights, Adam's moments and step counts, the global step (the
learning rate is a function of it), the epoch and the batch position in it (the sampler's plan
is a function of seed and epoch), the RNG states of Python, NumPy and torch (CPU and every CUDA
device: dropout draws from torch's), the mixed-precision loss scale, the best validation score
so far, the seconds spent, and how many rows the CSV log had.

Tensors go into the safetensors body; everything else is JSON in its ``__metadata__`` (no
pickle, like the checkpoints). The file is written under a temporary name and renamed, so a
run killed while saving leaves the previous state intact.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from affbatch.files import atomic_path

STATE_FILE = "train-state.safetensors"
STATE_FORMAT = "affbatch-train-state"
STATE_VERSION = 1


def _rng_states() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return meta, tensors


def _set_rng_states(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def save_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write the training state to ``path`` atomically. ``progress``: JSON-able counters."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in optim["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    rng_meta, rng_tensors = _rng_states()
    tensors.update(rng_tensors)
    meta = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "progress": progress,
        "param_groups": optim["param_groups"],
        "optim_scalars": scalars,
        "rng": rng_meta,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})


def read_progress(path: Path) -> dict[str, Any]:
    """Only the JSON part of a state file (cheap: the tensors are not read)."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["state"])
    if meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a training state of this version")
    return meta["progress"]


def load_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Restore model, optimizer, scaler and RNG states from ``path``; returns the progress counters."""
    path = Path(path)
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["state"])
    if meta.get("format") != STATE_FORMAT or meta.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a training state of this version")
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in meta["optim_scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    # Adam's load_state_dict moves the moments to the parameters' device (its "step" stays on the CPU).
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    _set_rng_states(meta["rng"], tensors)
    return meta["progress"]
