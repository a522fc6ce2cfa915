"""VGGFACE1-GRU-attention: the best affect model of the Aff-Wild2 paper (Kollias & Zafeiriou).

Paper: ``shared/paper/aff-wild2.txt``, Section III-B ("The CNN-RNN deep neural architectures",
Fig. 6) and Section IV-A (training details). Shapes:

    x (B, T, 3, 96, 96) float32 in [-1, 1], RGB
      -> VGG-16 trunk per frame (13 conv 3x3 + ReLU, 5 max-pools)      (B*T, 512, 3, 3)
      -> flatten (channel-major, as VGG-Face) -> fc6 -> ReLU -> dropout (B*T, 4096)
      -> 2-layer GRU, 128 units                                        (B, T, 128)
      -> causal windowed attention over the last 32 GRU outputs        (B, T, 128) context
      -> Linear([h_t; context_t]) -> tanh                              (B, T, 2) valence, arousal

The module is split in two so that the expensive, per-frame part and the cheap, sequential part
can be compiled and batched separately (``engines``): ``cnn`` (:class:`VGGFaceFC6`, one face at a
time, 5.7 GFLOPs) and ``temporal`` (:class:`GRUAttention`, one track at a time).

**Attention, and where it departs from the paper's TensorFlow.** The paper's model was built
with TensorFlow's ``tf.contrib.rnn.AttentionCellWrapper(cell, attn_length=32)``. At every step
that wrapper (1) projects ``[x_t; a_{t-1}]`` back to the input size, feeding the previous
attention read-out into the cell's input, (2) uses the concatenated state of all cell layers as
the query, (3) attends over a memory of its own 32 previous *outputs* (the current one excluded),
zero-filled at the start of a sequence and not masked, and (4) outputs
``Linear([cell_output; a_t])`` (128 units), which the paper's output layer maps to 2 values.
Here: (1) nothing is fed back, so the recurrent part stays a plain ``nn.GRU`` that exports as the
ONNX ``GRU`` op, which TensorRT's ONNX parser supports natively (a fed-back attention would turn
the recurrence into a loop of its own); (2) the query is the top GRU layer's output ``h_t``;
(3) the memory holds the GRU outputs ``h_{t-31} .. h_t`` (the current one included, so the
window is 32 long), and steps before the start of the sequence are masked out instead of being
zeros; (4) the wrapper's linear projection and a linear output layer compose into one linear map,
so one ``Linear(256 -> 2)`` followed by ``tanh`` plays both. The scores are Bahdanau's, as in
the wrapper: ``s_tj = v . tanh(W_k h_j + W_q h_t + b)``. The attention is written without loops
(windows gathered by index, a mask for the start) so that it exports to ONNX as plain ops.

**Importing VGG-Face's fc6** (done by ``training`` when the user has the weights; not here).
VGG-Face's fc6 takes a 7x7x512 map (224x224 input); at 96x96 the map is 3x3x512. Choice: the
224-pixel fc6 applied to the 3x3 map upsampled to 7x7 by nearest neighbour. Upsampling is
linear, so this folds exactly into a 3x3 fc6 whose weight at each of the 3x3 positions is the
*sum* of the 7x7 weights that copy it (rows/columns {0,1,2}, {3,4}, {5,6}):
:func:`fc6_weight_from_224`. A spatially uniform map gives the same fc6 response as in VGG-Face,
so the scale of the GRU's inputs is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

# --- numbers from the paper (shared/paper/aff-wild2.txt) -----------------------------------
# The crop (96x96x3, intensities in [-1, 1], Section III-A) and the frame rate (30 fps,
# Section II-C) are defined once, where the pipeline makes them.
from affbatch.faces.crops import CROP_SIZE  # noqa: E402
from affbatch.video.framerate import PAPER_FPS  # noqa: E402

FPS = int(PAPER_FPS)
#: The RNN is fed with the output of VGGFACE's first fully connected layer, fc6 (Sections III-B.2-3);
#: fc6 has 4096 units in VGG-Face (Parkhi et al. 2015, the paper's [34]).
FC6_UNITS = 4096
#: 2 hidden RNN layers with 128 units each (Section III-B.2).
GRU_LAYERS = 2
GRU_UNITS = 128
#: Attention length 32 (Section IV-A).
ATTENTION_LENGTH = 32
#: Training batches are 4 sequences of 80 consecutive frames (Section IV-A).
SEQUENCE_LENGTH = 80
#: Valence and arousal, in [-1, 1] (Section II-D, annotation; Fig. 6's output layer).
OUTPUTS = ("valence", "arousal")

# --- numbers from VGG-Face (Parkhi, Vedaldi & Zisserman 2015), the paper's [34] --------------
#: VGG-16 ("configuration D"): output channels of the 3x3 convolutions, one tuple per block;
#: each block ends with a 2x2 max-pool of stride 2 (96 -> 48 -> 24 -> 12 -> 6 -> 3).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: Dropout after fc6 in VGG-Face's training; active only in training mode.
FC6_DROPOUT = 0.5
#: Side of the conv map fc6 sees at VGG-Face's own 224x224 input.
VGGFACE_FC6_GRID = 7

#: Side of the last conv map at CROP_SIZE: five 2x2 pools halve it five times.
TRUNK_GRID = CROP_SIZE // 2 ** len(VGG16_BLOCKS)
#: Bahdanau attention's hidden size; TensorFlow's wrapper defaults it to the cell's output size.
ATTENTION_UNITS = GRU_UNITS


class AffectState(NamedTuple):
    """What continues a sequence: the GRU's hidden state and the attention's memory.

    ``hidden`` (layers, B, units) float32; ``memory`` (B, attention_length - 1, units) float32,
    the last GRU outputs, oldest first; ``memory_mask`` (B, attention_length - 1) bool, False
    where the slot lies before the start of the sequence.
    """

    hidden: torch.Tensor
    memory: torch.Tensor
    memory_mask: torch.Tensor


class VGGFaceFC6(nn.Module):
    """VGG-16 trunk and fc6: (N, 3, 96, 96) in [-1, 1] -> (N, 4096), after ReLU and dropout."""

    #: Where `--precision auto` may run it in bf16 (engines.autotune; tests/engines/test_precision_gates.py).
    bf16_runtimes = ("openvino", "torch")

    def __init__(self, fc6_units: int = FC6_UNITS, dropout: float = FC6_DROPOUT, crop_size: int = CROP_SIZE):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for block in VGG16_BLOCKS:
            for out in block:
                layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        grid = crop_size // 2 ** len(VGG16_BLOCKS)
        self.fc6 = nn.Linear(channels * grid * grid, fc6_units)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop6(self.relu6(self.fc6(torch.flatten(self.features(x), 1))))


class GRUAttention(nn.Module):
    """2-layer GRU, causal windowed attention, valence/arousal head (see the module docstring).

    forward(features (B, T, F), state=None) -> (y (B, T, 2) in [-1, 1], new AffectState).
    ``state=None`` starts every sequence afresh (zero hidden state, empty attention memory).
    """

    def __init__(
        self,
        input_size: int = FC6_UNITS,
        units: int = GRU_UNITS,
        layers: int = GRU_LAYERS,
        attention_length: int = ATTENTION_LENGTH,
        outputs: int = len(OUTPUTS),
    ):
        super().__init__()
        if attention_length < 1:
            raise ValueError(f"attention_length {attention_length}: must be at least 1")
        self.units, self.layers, self.attention_length = units, layers, attention_length
        self.gru = nn.GRU(input_size, units, num_layers=layers, batch_first=True)
        self.attn_key = nn.Linear(units, ATTENTION_UNITS, bias=False)
        self.attn_query = nn.Linear(units, ATTENTION_UNITS)
        self.attn_v = nn.Parameter(torch.empty(ATTENTION_UNITS))
        nn.init.uniform_(self.attn_v, -(units**-0.5), units**-0.5)
        self.out = nn.Linear(2 * units, outputs)

    def extra_repr(self) -> str:
        return f"attention_length={self.attention_length}"

    def initial_state(self, batch: int, like: torch.Tensor) -> AffectState:
        """Zero hidden state and an empty memory, for ``batch`` sequences (dtype/device of ``like``)."""
        memory = like.new_zeros((batch, self.attention_length - 1, self.units))
        return AffectState(
            like.new_zeros((self.layers, batch, self.units)),
            memory,
            torch.zeros(memory.shape[:2], dtype=torch.bool, device=like.device),
        )

    def forward(self, features: torch.Tensor, state: AffectState | None = None) -> tuple[torch.Tensor, AffectState]:
        if state is None:
            # features.shape[0] is traced as a graph value: the exported batch size stays dynamic.
            state = self.initial_state(features.shape[0], features)
        hidden, memory, memory_mask = state
        h, new_hidden = self.gru(features, hidden)  # (B, T, U)
        steps = h.shape[1]
        past = memory.shape[1]  # attention_length - 1
        keys_all = torch.cat([memory, h], dim=1)  # (B, past + T, U), oldest first
        valid_all = torch.cat([memory_mask, torch.ones_like(h[..., 0], dtype=torch.bool)], dim=1)
        # Step t attends over positions t .. t + past of keys_all, i.e. h_{t-past} .. h_t.
        index = torch.arange(steps, device=h.device)[:, None] + torch.arange(past + 1, device=h.device)[None, :]
        window = keys_all[:, index]  # (B, T, A, U)
        scores = torch.tanh(self.attn_key(keys_all)[:, index] + self.attn_query(h)[:, :, None, :]) @ self.attn_v
        scores = scores.masked_fill(~valid_all[:, index], float("-inf"))  # h_t itself is always valid
        weights = torch.softmax(scores, dim=-1)  # (B, T, A)
        context = (weights[..., None] * window).sum(dim=2)  # (B, T, U)
        y = torch.tanh(self.out(torch.cat([h, context], dim=-1)))
        # The last `past` positions: sliced from `steps` so that past == 0 gives empty tensors.
        return y, AffectState(new_hidden, keys_all[:, steps:], valid_all[:, steps:])


class VGGFaceGRUAttention(nn.Module):
    """The paper's VGGFACE1-GRU-attention: ``cnn`` per frame, then ``temporal`` per sequence.

    forward(x (B, T, 3, 96, 96) float32 in [-1, 1], state=None) -> (y (B, T, 2), new AffectState).
    Training feeds sequences of SEQUENCE_LENGTH from ``state=None``; passing the returned state
    back continues the same sequences exactly (``forward(x[:, :a]) then forward(x[:, a:], state)``
    equals ``forward(x)``). For long tracks, use :meth:`predict_track`.
    """

    architecture = "vggface-gru-attn"

    def __init__(
        self,
        fc6_units: int = FC6_UNITS,
        gru_units: int = GRU_UNITS,
        gru_layers: int = GRU_LAYERS,
        attention_length: int = ATTENTION_LENGTH,
        dropout: float = FC6_DROPOUT,
    ):
        super().__init__()
        self.cnn = VGGFaceFC6(fc6_units, dropout)
        self.temporal = GRUAttention(fc6_units, gru_units, gru_layers, attention_length)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation for training from scratch (and for tests with random weights).

        He (fan-in) for the convolutions and LeCun for fc6 keep the activations near unit scale
        through the 13 convolutions on [-1, 1] inputs, so that even random weights give outputs
        that depend on the input; PyTorch's default, or torchvision's fan-out variant, shrink
        fc6's output 20-fold and leave the GRU an almost constant input.
        """
        for m in self.cnn.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, m.in_features**-0.5)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, state: AffectState | None = None) -> tuple[torch.Tensor, AffectState]:
        # reshape, not flatten/unflatten: the TorchScript exporter traces the sizes passed to
        # reshape but bakes those given to unflatten, which would fix the exported batch and length.
        features = self.cnn(x.reshape(-1, *x.shape[2:])).reshape(x.shape[0], x.shape[1], -1)
        return self.temporal(features, state)

    @torch.inference_mode()
    def predict_track(
        self,
        frames: np.ndarray,
        window: int = SEQUENCE_LENGTH,
        warmup: int = ATTENTION_LENGTH,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Valence/arousal (N, 2) for one face track (N, 3, 96, 96) in eval mode; see :func:`predict_track`."""
        self.eval()
        param = next(self.parameters())

        def features(x: np.ndarray) -> np.ndarray:
            return self.cnn(torch.from_numpy(x).to(param)).cpu().numpy()

        def temporal(f: np.ndarray) -> np.ndarray:
            return self.temporal(torch.from_numpy(f).to(param))[0].cpu().numpy()

        return predict_track(frames, features, temporal, window=window, warmup=warmup, batch_size=batch_size)


def track_windows(
    frames: int, window: int = SEQUENCE_LENGTH, warmup: int = ATTENTION_LENGTH
) -> list[tuple[int, int, int]]:
    """The windows :func:`predict_track` runs: ``(start, stop, emit_from)`` in frame indices.

    Window k covers ``[k*S, min(k*S + window, frames))`` with stride ``S = window - warmup`` and
    emits its outputs from ``emit_from`` on: 0 for the first window, ``k*S + warmup`` after.
    The emitted ranges partition ``[0, frames)``.
    """
    if not 0 <= warmup < window:
        raise ValueError(f"window {window}, warmup {warmup}: need 0 <= warmup < window")
    stride = window - warmup
    spans = [(0, min(window, frames), 0)] if frames else []
    start = stride
    while start + warmup < frames:
        spans.append((start, min(start + window, frames), start + warmup))
        start += stride
    return spans


def predict_track(
    frames: np.ndarray,
    features: Callable[[np.ndarray], np.ndarray],
    temporal: Callable[[np.ndarray], np.ndarray],
    window: int = SEQUENCE_LENGTH,
    warmup: int = ATTENTION_LENGTH,
    batch_size: int = 32,
) -> np.ndarray:
    """Valence/arousal for a face track of any length, in overlapping windows with warm-up.

    ``frames``: (N, 3, 96, 96) float32 in [-1, 1] (any array that slices, e.g. a memmap);
    ``features``: (n, 3, 96, 96) -> (n, F), the per-frame CNN; ``temporal``: (1, T, F) -> (1, T, 2),
    the recurrent part started from a zero state. Returns (N, 2) float32.

    Window handling: each window of ``window`` frames (80, the training sequence length) starts
    from a zero state, as every training sequence did; consecutive windows overlap by ``warmup``
    frames (32, the attention length), and a window's first ``warmup`` outputs are dropped except
    in the first window (see :func:`track_windows`). So the output for frame t is *exactly* the
    model run on ``frames[s:t+1]`` from a zero state, where s is the start of the window that
    emits t: ``s = 0`` for ``t < window``, else ``s = S * ((t - warmup) // S)`` with
    ``S = window - warmup``; t sees between ``warmup`` and ``window - 1`` earlier frames, always a
    full attention window of its own track. Why not carry the state across windows: training
    only ever saw sequences of 80 from a zero state, so a state carried over thousands of frames
    is outside what the model learned, and every output would depend on the whole past of the
    track (a glitch early in a video would colour everything after it). Overlapping windows keep
    each output within the training distribution and local in time. The cost is small: the CNN,
    which dominates, runs once per frame; only the GRU and attention, about a thousandth of the
    work, run again on the overlap. (``forward`` with a state carries it, for callers who want
    that.)
    """
    n = len(frames)
    out = np.empty((n, 2), dtype=np.float32)
    cache, cache_start, cache_end = None, 0, 0  # features of frames[cache_start:cache_end]
    for start, stop, emit_from in track_windows(n, window, warmup):
        kept = [] if cache is None else [cache[start - cache_start :]]
        new = [features(np.asarray(frames[i : min(i + batch_size, stop)])) for i in range(cache_end, stop, batch_size)]
        cache, cache_start, cache_end = np.concatenate(kept + new), start, stop
        out[emit_from:stop] = temporal(cache[None])[0][emit_from - start :]
    return out


def fc6_weight_from_224(weight: torch.Tensor, grid: int = TRUNK_GRID) -> torch.Tensor:
    """VGG-Face's fc6 weight (units, 512*7*7) -> (units, 512*grid*grid), see the module docstring.

    Equal to applying the 224-pixel fc6 to the grid x grid map upsampled to 7x7 by nearest
    neighbour (``nn.functional.interpolate(mode="nearest")``): each 7x7 position's weights are
    added to the grid position it copies.
    """
    units = weight.shape[0]
    w = weight.reshape(units, -1, VGGFACE_FC6_GRID, VGGFACE_FC6_GRID)
    source = (torch.arange(VGGFACE_FC6_GRID) * grid) // VGGFACE_FC6_GRID  # nearest: floor(dst * in / out)
    onehot = nn.functional.one_hot(source, grid).to(w.dtype)  # (7, grid)
    return torch.einsum("ucyx,yi,xj->ucij", w, onehot, onehot).reshape(units, -1)
