"""``affbatch-train export``: checkpoint folders that ``affbatch score --model`` takes.

* ``export RUN DIR``: the run's best checkpoint (``RUN/best``), checked (sha256, loads into its
  architecture) and copied; a run without ``best/`` yet (stopped before its first validation)
  is converted from its training state, labelled as such. ``export CHECKPOINT DIR`` copies a
  checkpoint folder, checked the same way.
* ``export --init ARCH DIR``: a random initialisation of ARCH, labelled ``"weights":
  "untrained-init"`` in config.json (``affbatch score`` says so when it runs it): for
  benchmarks and tests, never for results.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from affbatch.errors import UsageError
from affbatch.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, Checkpoint, load_checkpoint, save_checkpoint
from training.state import STATE_FILE


def export_checkpoint(source: Path, dest: Path) -> Checkpoint:
    """Copy the checkpoint of ``source`` (a run folder or a checkpoint folder) to ``dest``."""
    source, dest = Path(source), Path(dest)
    if (source / "best" / CONFIG_FILE).is_file():
        source = source / "best"
    elif (source / STATE_FILE).is_file() and not (source / CONFIG_FILE).is_file():
        return _from_state(source, dest)
    _, checkpoint = load_checkpoint(source)  # checks the sha256 and that the weights fit
    if dest.resolve() == checkpoint.path.resolve():
        raise UsageError(f"{dest}: is the source checkpoint itself")
    dest.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copy2(checkpoint.path / name, dest / name)
    return load_checkpoint(dest)[1]


def _from_state(run: Path, dest: Path) -> Checkpoint:
    from training.models import build_model

    options = json.loads((run / "run.json").read_text())
    init_from = options.get("init_from")
    torch.manual_seed(0)
    model, _ = build_model(options["arch"], "iii" if init_from else "i", Path(init_from) if init_from else None)
    tensors = load_file(str(run / STATE_FILE))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    extra: dict[str, Any] = {"training": {"strategy": options["strategy"], "selected_by": "last training state"}}
    return save_checkpoint(model, dest, trained=True, extra=extra)


def export_init(architecture: str, dest: Path, seed: int = 0) -> Checkpoint:
    """A random initialisation of ``architecture`` (seeded), labelled untrained."""
    from affbatch.models.checkpoint import ARCHITECTURES

    if architecture not in ARCHITECTURES:
        raise UsageError(f"--init {architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)
    model = ARCHITECTURES[architecture]()
    note = "random initialisation for benchmarks and tests; not trained: its outputs mean nothing"
    return save_checkpoint(model.eval(), dest, trained=False, extra={"init": {"seed": seed, "note": note}})
