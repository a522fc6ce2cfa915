"""Affect models as ``affbatch score`` runs them: compiled by ``engines``, fed face crops.

Two kinds:

* ``FrameAffect``, a model that sees one face crop at a time (the embedded expression prior):
  crops of every track of a decode batch go through it together.
* ``SequenceAffect``, a model that sees a track as a sequence (``vggface-gru-attn``): its
  per-frame CNN runs on every crop as it comes (batched across tracks), and its recurrent part
  runs per track in overlapping windows (``models.vggface_gru_attn.predict_track``'s scheme),
  streamed, so a long video never holds more than a window of features per track.

Crops come as host numpy arrays (ONNX Runtime on the CPU: numpy in, numpy out, no copies) or as
torch tensors on the frames' device (a GPU batch): then features and windows stay tensors on
the engine's device, and only valence/arousal come to the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import engines
from affbatch.faces.crops import CROP_SIZE
from affbatch.video.decoders.base import is_tensor


@dataclass(frozen=True)
class AffectIdentity:
    name: str
    weights_sha256: str | None
    description: str


class FrameAffect:
    """A per-crop model: (K, 3, 96, 96) crops in [-1, 1] -> (K, 2) valence, arousal."""

    sequential = False

    def __init__(
        self,
        module: nn.Module,
        identity: AffectIdentity,
        runtime: str = "auto",
        device: str = "cpu",
        precision: str = "fp32",
    ):
        self.identity = identity
        example = torch.zeros(2, 3, CROP_SIZE, CROP_SIZE)
        self.engine = engines.compile(
            module.eval(),
            (example,),
            ["crops"],
            ["valence_arousal"],
            {"crops": {0: "faces"}, "valence_arousal": {0: "faces"}},
            runtime=runtime,
            device=device,
            precision=precision,
        )

    def __call__(self, crops) -> np.ndarray:
        """(K, 3, 96, 96) float32 crops, numpy or a torch tensor -> (K, 2) on the host."""
        if len(crops) == 0:
            return np.zeros((0, 2), np.float32)
        if is_tensor(crops):
            return to_host(self.engine(crops)[0])
        return self.engine(np.ascontiguousarray(crops, np.float32))[0]


class TemporalOutputs(nn.Module):
    """The recurrent part from a zero state, outputs only: what one window needs."""

    #: Where `--precision auto` may run it in bf16 (engines.autotune; tests/engines/test_precision_gates.py).
    bf16_runtimes = ("openvino", "torch")

    def __init__(self, temporal: nn.Module):
        super().__init__()
        self.temporal = temporal

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.temporal(features)[0]


@dataclass
class _TrackStream:
    """Features of one track not yet covered by a finished window, and what was emitted."""

    start: int = 0  # track position of features[0]
    features: list = field(default_factory=list)  # (F,) each: numpy rows, or tensor rows on the device
    windows_done: int = 0
    outputs: list[np.ndarray] = field(default_factory=list)  # (n, 2) chunks, in track order


class SequenceAffect:
    """A sequence model split as ``module.cnn`` (per frame) and ``module.temporal`` (per track).

    Windows: each covers ``window`` track positions and starts from a zero state; consecutive
    windows overlap by ``warmup`` positions whose outputs the later window does not emit (see
    ``models.vggface_gru_attn.track_windows``). Full windows run as soon as their features exist.
    """

    sequential = True

    def __init__(
        self,
        module: nn.Module,
        identity: AffectIdentity,
        window: int,
        warmup: int,
        runtime: str = "auto",
        device: str = "cpu",
        precision: str = "fp32",
    ):
        self.identity = identity
        self.window, self.warmup = window, warmup
        self.stride = window - warmup
        module = module.eval()
        crops = torch.zeros(2, 3, CROP_SIZE, CROP_SIZE)
        # The feature width, before compiling: compiling for CUDA moves the module there.
        with torch.inference_mode():
            width = module.cnn(crops).shape[1]
        self.cnn = engines.compile(
            module.cnn,
            (crops,),
            ["crops"],
            ["features"],
            {"crops": {0: "faces"}, "features": {0: "faces"}},
            runtime=runtime,
            device=device,
            precision=precision,
        )
        self.temporal = engines.compile(
            TemporalOutputs(module.temporal),
            (torch.zeros(1, 3, width),),
            ["features"],
            ["valence_arousal"],
            {"features": {1: "time"}, "valence_arousal": {1: "time"}},
            runtime=runtime,
            device=device,
            precision=precision,
        )

    def features(self, crops):
        """(K, 3, 96, 96) crops -> (K, F) features: numpy for numpy crops, a tensor on the
        engine's device for tensor crops (they stay there for the windows)."""
        if len(crops) == 0:
            return np.zeros((0, 0), np.float32)
        if is_tensor(crops):
            return self.cnn(crops)[0]
        return self.cnn(np.ascontiguousarray(crops, np.float32))[0]

    def new_stream(self) -> _TrackStream:
        return _TrackStream()

    def push(self, stream: _TrackStream, features) -> None:
        """Append a track's next positions' features; run every window that is now complete."""
        stream.features.extend(features)
        while True:
            k = stream.windows_done
            start = k * self.stride
            if start + self.window > stream.start + len(stream.features):
                return
            self._run_window(stream, start, start + self.window, 0 if k == 0 else start + self.warmup)

    def finish(self, stream: _TrackStream) -> np.ndarray:
        """Run the last, shorter windows; (n, 2) outputs for every position pushed, in order."""
        n = stream.start + len(stream.features)
        while True:
            k = stream.windows_done
            start = k * self.stride
            emit_from = 0 if k == 0 else start + self.warmup
            if start >= n or (k > 0 and emit_from >= n):
                break
            self._run_window(stream, start, min(start + self.window, n), emit_from)
        return np.concatenate(stream.outputs) if stream.outputs else np.zeros((0, 2), np.float32)

    def _run_window(self, stream: _TrackStream, start: int, stop: int, emit_from: int) -> None:
        rows = stream.features[start - stream.start : stop - stream.start]
        if is_tensor(rows[0]):
            import torch

            out = to_host(self.temporal(torch.stack(rows)[None])[0][0])
        else:
            out = self.temporal(np.stack(rows)[None].astype(np.float32, copy=False))[0][0]
        stream.outputs.append(out[emit_from - start :])
        stream.windows_done += 1
        # Keep only what the next window needs.
        next_start = stream.windows_done * self.stride
        drop = max(0, next_start - stream.start)
        del stream.features[:drop]
        stream.start += drop


def to_host(x) -> np.ndarray:
    """A model output on the host as float32 numpy (valence/arousal: the only values that come back)."""
    return x.detach().float().cpu().numpy() if is_tensor(x) else np.asarray(x, np.float32)


def repeat_rows(x, times: int):
    """``x`` (1, F) repeated ``times`` along the first axis, numpy or tensor (a view for tensors)."""
    return x.expand(times, -1) if is_tensor(x) else np.repeat(x, times, axis=0)
