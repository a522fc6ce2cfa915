"""The paper's CNN-RNN zoo (Section III-B): any backbone x any RNN, with or without attention.

    model = CnnRnn("resnet50", "gru", attention=True)            # architecture "resnet50-gru-attn"
    y, state = model(x)             # x (B, T, 3, 96, 96) in [-1, 1] -> y (B, T, 2) in [-1, 1]

Same interface as :class:`~affbatch.models.vggface_gru_attn.VGGFaceGRUAttention` (whose
``forward`` and ``predict_track`` it reuses): ``cnn`` runs per frame ((N, 3, 96, 96) -> (N, F),
:mod:`affbatch.models.backbones`), ``temporal`` per sequence ((B, T, F), state -> (y, state)),
so ``affbatch score`` compiles and streams any of them as it does the paper's best model.

* With attention, ``temporal`` is :class:`RNNAttention`: ``GRUAttention`` itself (its causal
  32-step Bahdanau attention and ``Linear([h_t; context_t]) -> tanh`` head, imported, not
  copied) over the chosen RNN of :mod:`affbatch.models.rnns` (2 layers of 128).
* Without, :class:`RNNHead`: the RNN, then ``Linear(h_t) -> tanh``.

State: an ``AffectState`` in both cases; ``hidden`` is the RNN's one-tensor state (for the LSTM,
h and c stacked), and without attention the memory is empty (length 0).

Architecture names: ``<backbone>[-<feed>]-<rnn>[-attn]``, the feed named for VGG-16 only (the
others are always fed from their pooled last stage): ``vgg16-fc6-gru-attn``, ``vgg16-pool-lstm``,
``resnet50-lstm``, ``densenet121-indrnn-attn`` ... (:data:`ZOO` lists all 24). The paper's best,
``vggface-gru-attn`` (:class:`VGGFaceGRUAttention`), computes exactly what
``CnnRnn("vgg16", "gru", attention=True, feed="fc6")`` computes; :func:`state_from_vggface_gru_attn`
maps its state dict (``temporal.gru.*`` -> ``temporal.rnn.*``, everything else unchanged).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from affbatch.models import vggface_gru_attn as vga
from affbatch.models.backbones import RESNET_VARIANTS, backbone_width, make_backbone
from affbatch.models.rnns import LAYERS, RNNS, UNITS, make_rnn
from affbatch.models.vggface_gru_attn import AffectState


class RNNAttention(vga.GRUAttention):
    """``GRUAttention`` with ``rnn`` (any of :mod:`affbatch.models.rnns`) in place of its ``nn.GRU``.

    forward(features (B, T, F), state=None) -> (y (B, T, 2), AffectState), as GRUAttention.
    """

    def __init__(self, rnn: nn.Module, attention_length: int = vga.ATTENTION_LENGTH, outputs: int = len(vga.OUTPUTS)):
        # GRUAttention builds its own nn.GRU (from input size 1 here, so it costs nothing) as
        # `self.gru`; it is dropped, and `gru` below hands GRUAttention.forward the given rnn.
        super().__init__(1, rnn.hidden_size, rnn.num_layers, attention_length, outputs)
        del self.gru
        self.rnn = rnn

    @property
    def gru(self) -> nn.Module:  # what GRUAttention.forward calls
        return self.rnn

    def initial_state(self, batch: int, like: Tensor) -> AffectState:
        return super().initial_state(batch, like)._replace(hidden=self.rnn.initial_state(batch, like))


class RNNHead(nn.Module):
    """The RNN, then ``tanh(Linear(h_t))``: the zoo's models without attention."""

    def __init__(self, rnn: nn.Module, outputs: int = len(vga.OUTPUTS)):
        super().__init__()
        self.rnn = rnn
        self.units, self.layers = rnn.hidden_size, rnn.num_layers
        self.out = nn.Linear(rnn.hidden_size, outputs)

    def initial_state(self, batch: int, like: Tensor) -> AffectState:
        memory = like.new_zeros((batch, 0, self.units))
        return AffectState(self.rnn.initial_state(batch, like), memory, memory[..., 0].bool())

    def forward(self, features: Tensor, state: AffectState | None = None) -> tuple[Tensor, AffectState]:
        if state is None:
            state = self.initial_state(features.shape[0], features)
        h, hidden = self.rnn(features, state.hidden)
        return torch.tanh(self.out(h)), state._replace(hidden=hidden)


def architecture_name(backbone: str, rnn: str, attention: bool, feed: str = "pool") -> str:
    """``<backbone>[-<feed>]-<rnn>[-attn]``; the feed is named for vgg16 only."""
    parts = [backbone, feed] if backbone == "vgg16" else [backbone]
    return "-".join([*parts, rnn] + (["attn"] if attention else []))


def parse_architecture(name: str) -> dict[str, Any]:
    """The inverse of :func:`architecture_name`: ``{"backbone", "feed", "rnn", "attention"}``."""
    if name not in ZOO:
        raise ValueError(f"architecture {name!r}: not in the zoo ({', '.join(ZOO)})")
    return dict(ZOO[name])


#: Every zoo architecture by name, with its parts.
ZOO: dict[str, dict[str, Any]] = {
    architecture_name(b, r, a, f): {"backbone": b, "feed": f, "rnn": r, "attention": a}
    for (b, f), r, a in itertools.product(
        [("vgg16", "fc6"), ("vgg16", "pool"), ("resnet50", "pool"), ("densenet121", "pool")], RNNS, (True, False)
    )
}


class CnnRnn(nn.Module):
    """A zoo model: ``cnn`` (per frame) and ``temporal`` (per sequence), as VGGFaceGRUAttention.

    ``backbone``: vgg16, resnet50, densenet121; ``rnn``: lstm, gru, indrnn; ``feed``: fc6 or
    pool for vgg16 (default fc6, the paper's better one), pool for the others (the default);
    ``resnet_variant``: caffe (the VGGFace2 models', default) or pytorch (torchvision's).
    Random initialisation (:func:`~affbatch.models.backbones.init_backbone_` for the CNN).
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        rnn: str = "gru",
        attention: bool = True,
        feed: str | None = None,
        *,
        units: int = UNITS,
        layers: int = LAYERS,
        attention_length: int = vga.ATTENTION_LENGTH,
        resnet_variant: str = RESNET_VARIANTS[0],
    ):
        super().__init__()
        feed = feed or ("fc6" if backbone == "vgg16" else "pool")
        self.backbone, self.feed, self.rnn_type, self.attention = backbone, feed, rnn, attention
        self.cnn = make_backbone(backbone, feed, resnet_variant)
        recurrent = make_rnn(rnn, backbone_width(self.cnn), units, layers)
        self.temporal = RNNAttention(recurrent, attention_length) if attention else RNNHead(recurrent)

    @property
    def architecture(self) -> str:
        return architecture_name(self.backbone, self.rnn_type, self.attention, self.feed)

    def extra_repr(self) -> str:
        return f"architecture={self.architecture!r}"

    # The paper's model's own methods: they use only `cnn` and `temporal`.
    forward = vga.VGGFaceGRUAttention.forward
    predict_track = vga.VGGFaceGRUAttention.predict_track

    @classmethod
    def from_name(cls, name: str, **options: Any) -> CnnRnn:
        """The zoo model called ``name`` (see :data:`ZOO`), e.g. ``CnnRnn.from_name("resnet50-lstm")``."""
        return cls(**parse_architecture(name), **options)

    @classmethod
    def from_vggface_gru_attn(cls, model: vga.VGGFaceGRUAttention) -> CnnRnn:
        """``vgg16-fc6-gru-attn`` holding ``model``'s weights: the same function."""
        t = model.temporal
        zoo = cls("vgg16", "gru", True, "fc6", units=t.units, layers=t.layers, attention_length=t.attention_length)
        zoo.load_state_dict(state_from_vggface_gru_attn(model.state_dict()))
        return zoo


def state_from_vggface_gru_attn(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``vggface-gru-attn`` state dict as ``vgg16-fc6-gru-attn``'s: ``temporal.gru.`` -> ``temporal.rnn.``."""
    prefix = "temporal.gru."
    return {("temporal.rnn." + k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


# --- checkpoints (affbatch.models.checkpoint writes and reads these configs) --------------------


def describe(model: CnnRnn) -> dict[str, Any]:
    """The config.json fields that rebuild ``model`` (with :func:`build`)."""
    temporal = model.temporal
    backbone: dict[str, Any] = {"name": model.backbone, "feature": model.feed, "units": backbone_width(model.cnn)}
    if model.backbone == "resnet50":
        backbone["variant"] = model.cnn.variant
    return {
        "input_size": [vga.CROP_SIZE, vga.CROP_SIZE, 3],
        "input_layout": "(batch, time, 3, height, width), RGB, float32",
        "normalisation": "[-1,1]",
        "fps": vga.FPS,
        "backbone": backbone,
        "rnn": {"type": model.rnn_type, "layers": temporal.rnn.num_layers, "units": temporal.rnn.hidden_size},
        "attention": model.attention,
        "attention_length": temporal.attention_length if model.attention else None,
        "sequence_length": vga.SEQUENCE_LENGTH,
        "outputs": list(vga.OUTPUTS),
    }


def build(config: Mapping[str, Any]) -> CnnRnn:
    """The (untrained) model a config.json written by :func:`describe` describes."""
    if list(config["input_size"]) != [vga.CROP_SIZE, vga.CROP_SIZE, 3] or config["normalisation"] != "[-1,1]":
        raise ValueError(
            f"input {config['input_size']} {config['normalisation']}: this version reads 96x96x3 in [-1,1]"
        )
    parts = parse_architecture(config["architecture"])
    backbone, rnn = config["backbone"], config["rnn"]
    found = {
        "backbone": backbone["name"],
        "feed": backbone["feature"],
        "rnn": rnn["type"],
        "attention": config["attention"],
    }
    if found != parts:
        raise ValueError(f"architecture {config['architecture']!r} but its config describes {found}")
    options: dict[str, Any] = {"units": rnn["units"], "layers": rnn["layers"]}
    if config["attention"]:
        options["attention_length"] = config["attention_length"]
    if "variant" in backbone:
        options["resnet_variant"] = backbone["variant"]
    return CnnRnn(**parts, **options)
