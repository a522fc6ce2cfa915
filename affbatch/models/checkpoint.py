"""Affect-model checkpoints: a folder with ``model.safetensors`` and ``config.json``. No pickles.

``config.json`` says what the weights are for (architecture and its sizes, input size and
normalisation, frame rate, sequence and attention lengths), which affbatch wrote them, whether
they are trained or an untrained initialisation (``"weights": "trained" | "untrained-init"``),
and the sha256 of ``model.safetensors`` (checked on load, and recorded in the traces' metadata).

    save_checkpoint(model, "ckpt/", trained=True, extra={"strategy": "iii"})
    model, ckpt = load_checkpoint("ckpt/")        # ckpt.sha256, ckpt.trained, ckpt.config
    model, ckpt = resolve_affect_model(option)    # what --model NAME|CHECKPOINT resolves to
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import affbatch
from affbatch.errors import UsageError
from affbatch.files import atomic_path, file_sha256, write_json_atomically
from affbatch.models import cnn_rnn
from affbatch.models import vggface_gru_attn as vga

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "affbatch-checkpoint"
FORMAT_VERSION = 1
#: Files that hold pickles: never loaded, since unpickling runs arbitrary code.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")
#: Architectures a checkpoint can name, and their classes: the paper's best under its own name,
#: then the zoo (``cnn_rnn.ZOO``: vgg16-fc6-gru-attn, resnet50-lstm, ...), built by
#: ``cnn_rnn.CnnRnn.from_name``.
ARCHITECTURES: dict[str, Callable[..., torch.nn.Module]] = {
    vga.VGGFaceGRUAttention.architecture: vga.VGGFaceGRUAttention,
    **{name: functools.partial(cnn_rnn.CnnRnn.from_name, name) for name in cnn_rnn.ZOO},
}

HOW_TO_GET_ONE = (
    "train one with `affbatch-train fit` (the README's training section; `affbatch-train demo` trains a small one), "
    f"or pass a checkpoint folder ({WEIGHTS_FILE} + {CONFIG_FILE}): --model path/to/checkpoint/"
)


class CheckpointError(UsageError):
    """A model name without weights, or a checkpoint that cannot be loaded; the run cannot start."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on disk: its folder, its config, and the sha256 (hex) of its weights file."""

    path: Path
    config: dict[str, Any]
    sha256: str

    @property
    def architecture(self) -> str:
        return self.config["architecture"]

    @property
    def trained(self) -> bool:
        return self.config["weights"] == "trained"


def _vggface_gru_attn_config(model: vga.VGGFaceGRUAttention) -> dict[str, Any]:
    temporal = model.temporal
    return {
        "input_size": [vga.CROP_SIZE, vga.CROP_SIZE, 3],
        "input_layout": "(batch, time, 3, height, width), RGB, float32",
        "normalisation": "[-1,1]",
        "fps": vga.FPS,
        "backbone": {"name": "vgg16", "family": "VGG-Face", "feature": "fc6", "units": model.cnn.fc6.out_features},
        "rnn": {"type": "gru", "layers": temporal.layers, "units": temporal.units},
        "attention_length": temporal.attention_length,
        "sequence_length": vga.SEQUENCE_LENGTH,
        "outputs": list(vga.OUTPUTS),
    }


def _vggface_gru_attn_build(config: Mapping[str, Any]) -> vga.VGGFaceGRUAttention:
    if list(config["input_size"]) != [vga.CROP_SIZE, vga.CROP_SIZE, 3] or config["normalisation"] != "[-1,1]":
        raise ValueError(
            f"input {config['input_size']} {config['normalisation']}: this version reads 96x96x3 in [-1,1]"
        )
    return vga.VGGFaceGRUAttention(
        fc6_units=config["backbone"]["units"],
        gru_units=config["rnn"]["units"],
        gru_layers=config["rnn"]["layers"],
        attention_length=config["attention_length"],
    )


_DESCRIBE = {
    vga.VGGFaceGRUAttention.architecture: _vggface_gru_attn_config,
    **dict.fromkeys(cnn_rnn.ZOO, cnn_rnn.describe),
}
_BUILD = {vga.VGGFaceGRUAttention.architecture: _vggface_gru_attn_build, **dict.fromkeys(cnn_rnn.ZOO, cnn_rnn.build)}


def model_from_config(config: dict) -> torch.nn.Module:
    """A freshly initialised model of the architecture and sizes a checkpoint's config describes
    (the constructor ``load_checkpoint`` runs before it loads the weights)."""
    return _BUILD[config["architecture"]](config)


def save_checkpoint(
    model: torch.nn.Module, folder: str | os.PathLike, *, trained: bool, extra: Mapping[str, Any] | None = None
) -> Checkpoint:
    """Write ``model``'s weights and config into ``folder`` (created; files replaced atomically).

    ``trained=False`` labels the weights ``untrained-init`` (e.g. a random initialisation saved
    for tests or as a training's starting point). ``extra``: more JSON-able facts for the config
    (dataset, strategy, steps, where pretrained weights came from); it cannot override the
    fields written here.
    """
    architecture = getattr(model, "architecture", None)
    if architecture not in _DESCRIBE:
        raise CheckpointError(f"{type(model).__name__}: no checkpoint format for it; known: {', '.join(ARCHITECTURES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    weights = folder / WEIGHTS_FILE
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"architecture": architecture})
    config: dict[str, Any] = dict(extra or {})
    config.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        architecture=architecture,
        weights="trained" if trained else "untrained-init",
        **_DESCRIBE[architecture](model),
        affbatch_version=affbatch.__version__,
        weights_sha256=file_sha256(weights),
    )
    write_json_atomically(folder / CONFIG_FILE, config, indent=2)
    return Checkpoint(folder, config, config["weights_sha256"])


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: pickle checkpoints ({', '.join(PICKLE_SUFFIXES)}) are not loaded, since unpickling runs code; "
            f"affbatch reads a folder with {WEIGHTS_FILE} + {CONFIG_FILE} (save_checkpoint writes one)"
        )


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, Checkpoint]:
    """The model stored in checkpoint folder ``path`` (or its ``model.safetensors``), in eval mode."""
    path = Path(path)
    _refuse_pickle(path)
    folder = path.parent if path.name == WEIGHTS_FILE else path
    weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder ({HOW_TO_GET_ONE})")
    for needed in (weights, config_path):
        if not needed.is_file():
            raise CheckpointError(
                f"{folder}: not a checkpoint, {needed.name} is missing (need {WEIGHTS_FILE} + {CONFIG_FILE})"
            )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config_path}: unreadable config ({e})") from e
    if not isinstance(config, dict):
        config = {}
    architecture = config.get("architecture")
    if config.get("format") != FORMAT or architecture not in _BUILD:
        raise CheckpointError(
            f"{config_path}: format {config.get('format')!r}, architecture {architecture!r}; "
            f"expected format {FORMAT!r} with one of: {', '.join(ARCHITECTURES)}"
        )
    digest = file_sha256(weights)
    if config.get("weights_sha256") not in (None, digest):
        raise CheckpointError(
            f"{weights}: sha256 {digest[:12]}… differs from {config['weights_sha256'][:12]}… in {CONFIG_FILE}: "
            "the weights changed after the checkpoint was written"
        )
    try:
        model = model_from_config(config)
        state = load_file(weights)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{folder}: weights do not fit {architecture}: {first_line}") from e
    return model.to(device).eval(), Checkpoint(folder, config, digest)


def resolve_affect_model(name_or_path: str, device: str = "cpu") -> tuple[torch.nn.Module, Checkpoint]:
    """What ``--model NAME|CHECKPOINT`` means for the trainable affect models.

    A checkpoint folder (or its ``model.safetensors``) is loaded. An architecture's name alone
    (``vggface-gru-attn``) has no weights to go with it: that raises :class:`CheckpointError`
    saying how to get a checkpoint. The embedded prior and ``auto`` are resolved before this by
    ``affbatch.models``.
    """
    path = Path(name_or_path)
    _refuse_pickle(path)
    if path.exists():
        return load_checkpoint(path, device)
    if name_or_path in ARCHITECTURES:
        raise CheckpointError(
            f"--model {name_or_path} needs trained weights and none ship with affbatch: {HOW_TO_GET_ONE}"
        )
    raise CheckpointError(
        f"--model {name_or_path}: neither a model name ({', '.join(ARCHITECTURES)}) nor an existing checkpoint folder"
    )
