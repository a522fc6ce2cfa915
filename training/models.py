"""Which model a training run starts from, and which of its parts it trains (the strategies).

Models are built through ``affbatch.models.checkpoint``: by architecture name
(``checkpoint.ARCHITECTURES``: ``vggface-gru-attn`` and the zoo) or from a checkpoint folder
(``load_checkpoint``). Any model with the VGGFaceGRUAttention interface plugs in: ``cnn``
(per frame, (N, 3, 96, 96) -> (N, F)) and ``temporal`` (features (B, T, F), state -> (y, state)).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from affbatch.errors import UsageError

STRATEGIES = {
    "i": "CNN frozen, training the RNN, attention and output",
    "ii": "all layers trained, RNN from a random initialisation",
    "iii": "all layers trained, starting from --init-from (the best strategy-i checkpoint)",
}


def _fresh(architecture: str, config: dict | None):
    """A newly initialised model of ``architecture`` (with ``config``'s sizes when given)."""
    from affbatch.models import checkpoint

    if config is not None:
        return checkpoint.model_from_config({**config, "architecture": architecture})
    if architecture not in checkpoint.ARCHITECTURES:
        raise UsageError(f"--arch {architecture!r}: choose one of {', '.join(checkpoint.ARCHITECTURES)}")
    return checkpoint.ARCHITECTURES[architecture]()


def build_model(
    arch: str,
    strategy: str,
    init_from: Path | None = None,
    backbone: Path | None = None,
    backbone_kind: str = "vggface",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The starting model for ``strategy`` and its provenance (for the checkpoint's config).

    Seed torch before calling: fresh layers draw their initial weights from its generator.
    """
    from affbatch.models.checkpoint import load_checkpoint

    provenance: dict[str, Any] = {"architecture": arch, "notes": []}
    if strategy == "iii" and init_from is None:
        raise UsageError("--strategy iii starts from the best strategy-i checkpoint: pass --init-from RUN_I/best")
    if init_from is not None:
        model, ckpt = load_checkpoint(init_from)
        provenance.update(architecture=ckpt.architecture, init_from={"path": str(ckpt.path), "sha256": ckpt.sha256})
        if not ckpt.trained:
            provenance["notes"].append(f"note: --init-from {init_from} holds an untrained initialisation")
        if strategy == "ii":  # a random RNN: keep only the checkpoint's CNN
            fresh = _fresh(ckpt.architecture, ckpt.config)
            fresh.cnn.load_state_dict(model.cnn.state_dict())
            model = fresh
    else:
        model = _fresh(arch, None)
    if backbone is not None:
        try:
            from training.pretrained import load_into
        except ImportError:
            raise UsageError("--backbone: training.pretrained is not in this installation") from None
        try:
            provenance["pretrained"] = load_into(model, backbone_kind, backbone)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--backbone {backbone}: {exc}") from None
    elif init_from is None and strategy in ("i", "ii"):
        provenance["notes"].append(
            "note: no --backbone and no --init-from: the CNN starts from a random initialisation"
            + (" and stays frozen there (strategy i)" if strategy == "i" else "")
        )
    model.train()
    return model, provenance


def trailing_dropout(cnn: torch.nn.Module) -> torch.nn.Dropout | None:
    """The dropout a CNN ends with (VGG's after fc6), or None.

    Strategy i keeps "the CNN weights fixed to their pre-trained values": its weights, not its
    dropout. The frozen CNN runs in eval mode (batch-norm statistics frozen too, no dropout
    anywhere inside), and the dropout it ends with is applied to its output during training,
    as a frozen network run in training mode would. Ending the CNN, it can be applied to cached
    features as well, so the cache stays exact.
    """
    children = list(cnn.children())
    return children[-1] if children and isinstance(children[-1], torch.nn.Dropout) else None


def freeze_for_strategy(model: torch.nn.Module, strategy: str) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` as ``strategy`` says; returns the parameters to optimise."""
    frozen = strategy == "i"
    for p in model.cnn.parameters():
        p.requires_grad_(not frozen)
    for p in model.temporal.parameters():
        p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]
