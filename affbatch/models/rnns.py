"""The recurrent parts of the zoo: LSTM, GRU and IndRNN, 2 layers of 128 units (paper, Section III-B.2).

One interface for all three, the one ``GRUAttention`` already calls ``nn.GRU`` with::

    out, state = rnn(x, state=None)
    x (B, T, input_size) float32 -> out (B, T, hidden_size), the top layer's outputs;
    state: ONE tensor (state_layers, B, hidden_size); None starts from zeros.

``state_layers`` is ``num_layers`` for GRU and IndRNN, ``2 * num_layers`` for the LSTM (its h
then its c stacked: one tensor, so that the attention's :class:`AffectState` and the ONNX graphs
carry the same kind of state for every RNN). Running T steps at once equals running T1 then
T - T1 steps with the returned state.

ONNX: :class:`GRU` and :class:`LSTM` subclass ``nn.GRU`` / ``nn.LSTM`` (same parameter names,
so their state dicts are torch's), and export as the ONNX ``GRU`` / ``LSTM`` ops, which ONNX
Runtime and TensorRT's ONNX parser run natively. :class:`IndRNN` has no ONNX op: its time
recurrence is a TorchScript-scripted loop, which the exporter writes as an ONNX ``Loop`` over a
dynamic number of steps (each step's output is written into a preallocated tensor, a
``ScatterND`` in the loop body, so that no ONNX sequence ops appear). ONNX Runtime runs it at
any length (tested). Every op of that graph is in TensorRT's ONNX parser's support matrix
(``Loop``, mapped to TensorRT's ``ILoop``, and ``ScatterND``; ``engines.tensorrt_ops``
checks the exported graph), but it has not been built with TensorRT in this version (no GPU
in the tests).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

# The paper's 2 hidden RNN layers of 128 units (Section III-B.2) and its training sequence length
# of 80 (Section IV-A; the IndRNN's recurrent-weight bound below is chosen for it), defined once
# with the paper's model.
from affbatch.models.vggface_gru_attn import GRU_LAYERS as LAYERS
from affbatch.models.vggface_gru_attn import GRU_UNITS as UNITS
from affbatch.models.vggface_gru_attn import SEQUENCE_LENGTH


class GRU(nn.GRU):
    """``nn.GRU`` with batch-first inputs and the zoo's ``(x, state) -> (out, state)`` interface."""

    kind = "gru"

    def __init__(self, input_size: int, hidden_size: int = UNITS, num_layers: int = LAYERS):
        super().__init__(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    @property
    def state_layers(self) -> int:
        return self.num_layers

    def initial_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros((self.state_layers, batch, self.hidden_size))


class LSTM(nn.LSTM):
    """``nn.LSTM`` whose (h, c) travel as one tensor ``cat([h, c])`` of (2 * layers, B, units)."""

    kind = "lstm"

    def __init__(self, input_size: int, hidden_size: int = UNITS, num_layers: int = LAYERS):
        super().__init__(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    @property
    def state_layers(self) -> int:
        return 2 * self.num_layers

    def initial_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros((self.state_layers, batch, self.hidden_size))

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        if state is None:
            state = self.initial_state(x.shape[0], x)
        h, c = state[: self.num_layers], state[self.num_layers :]
        out, (h, c) = super().forward(x, (h.contiguous(), c.contiguous()))
        return out, torch.cat([h, c], dim=0)


def _script(fn):
    # TorchScript is what turns this loop into an ONNX Loop with the TorchScript exporter that
    # engines uses (dynamo=False, see engines.onnx_export); recent torch warns that scripting is
    # deprecated, which is not news to users of this module.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=DeprecationWarning)
        return torch.jit.script(fn)


@_script
def _indrnn_steps(wx: Tensor, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """h_t = relu(wx_t + u * h_{t-1}) over the time axis of wx (B, T, U); h (B, U) the start.

    Scripted, not traced: the loop then exports as an ONNX Loop whose trip count is T, so the
    graph runs at any sequence length (a traced loop would be unrolled for the example's T).
    The outputs go into a preallocated (T, B, U) tensor (a ScatterND per step in ONNX): a
    fixed-shape loop-carried value, which TensorRT's loops accept, where a list of steps would
    export as ONNX sequence ops (SequenceInsert, ConcatFromSequence) that TensorRT lacks.
    """
    wx = wx.transpose(0, 1)
    out = torch.zeros_like(wx)
    for t in range(wx.size(0)):
        h = torch.relu(wx[t] + u * h)
        out[t] = h
    return out.transpose(0, 1), h


class IndRNN(nn.Module):
    """Independently recurrent network (Li, Li, Cook, Zhu & Gao, CVPR 2018), stacked layers.

    Layer k: ``h_t = relu(W_k x_t + u_k * h_{t-1} + b_k)``, u_k a vector (each unit sees only its
    own past). Parameters per layer: ``weight_ih_l{k}`` (units, in), ``weight_hh_l{k}`` (units,)
    = u, ``bias_l{k}`` (units,).

    Following Li et al. (and the TensorFlow IndRNN cell of that time, ``recurrent_max_abs``),
    u is clipped to ``[-m, m]`` inside ``forward`` with ``m = 2 ** (1 / 80)`` so that a unit's
    memory neither explodes nor vanishes over a training sequence of 80 steps; u starts uniform
    in ``[0, m]``, W as ``nn.Linear`` does, b at 0.
    """

    kind = "indrnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int = UNITS,
        num_layers: int = LAYERS,
        recurrent_max_abs: float = 2.0 ** (1.0 / SEQUENCE_LENGTH),
    ):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.recurrent_max_abs = recurrent_max_abs
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(hidden_size, n_in)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(hidden_size)))
            self.register_parameter(f"bias_l{k}", nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for k in range(self.num_layers):
            nn.init.kaiming_uniform_(getattr(self, f"weight_ih_l{k}"), a=math.sqrt(5))  # nn.Linear's
            nn.init.uniform_(getattr(self, f"weight_hh_l{k}"), 0.0, self.recurrent_max_abs)
            nn.init.zeros_(getattr(self, f"bias_l{k}"))

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"recurrent_max_abs={self.recurrent_max_abs:.5f}"
        )

    @property
    def state_layers(self) -> int:
        return self.num_layers

    def initial_state(self, batch: int, like: Tensor) -> Tensor:
        return like.new_zeros((self.state_layers, batch, self.hidden_size))

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Layer k's (W, u clipped as forward uses it, b)."""
        u = getattr(self, f"weight_hh_l{k}").clamp(-self.recurrent_max_abs, self.recurrent_max_abs)
        return getattr(self, f"weight_ih_l{k}"), u, getattr(self, f"bias_l{k}")

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if state is None:
            state = self.initial_state(x.shape[0], x)
        finals = []
        for k in range(self.num_layers):
            w, u, b = self.layer_weights(k)
            # The input projection of every step at once; only u * h_{t-1} is sequential.
            x, h = _indrnn_steps(nn.functional.linear(x, w, b), u, state[k])
            finals.append(h)
        return x, torch.stack(finals, dim=0)


#: The zoo's RNNs by name.
RNNS: dict[str, type[nn.Module]] = {"lstm": LSTM, "gru": GRU, "indrnn": IndRNN}


def make_rnn(kind: str, input_size: int, hidden_size: int = UNITS, num_layers: int = LAYERS) -> nn.Module:
    """The RNN called ``kind`` (lstm, gru, indrnn) over ``input_size`` features."""
    if kind not in RNNS:
        raise ValueError(f"rnn {kind!r}: choose one of {', '.join(RNNS)}")
    return RNNS[kind](input_size, hidden_size, num_layers)
