"""The zoo table: parameters and FLOPs per frame at 96x96, for each backbone x RNN (attention on),
each exported through ``engines`` and checked under ONNX Runtime against torch.

    python scripts/zoo_table.py [--json zoo.json] [--frames 2]

FLOPs convention: 2 x the multiply-accumulates of the convolutions, linear layers and RNN
matrix products, counted by forward hooks from the shapes each layer sees (a convolution:
output elements x in_channels/groups x kernel area; a linear layer: output elements x
in_features; per RNN step and layer: 3 (GRU) or 4 (LSTM) x units x (inputs + units), IndRNN
units x inputs + units), plus the attention's scores and weighted sum (window x (attention units
+ units) per step). Batch norm, activations, pooling and additions are not counted. Per frame:
the CNN on one crop, plus the recurrent part per step of an 80-frame window (its attention keys
cover the window and the 31 zero-filled slots before it).

The check: each model's ``cnn`` and ``temporal`` are compiled by ``engines.compile`` for ONNX
Runtime exactly as ``affbatch score`` compiles them (dynamic faces and time axes); "max |dy|" is
the largest difference of valence/arousal between ONNX Runtime and torch, end to end on
``--frames`` crops and on an 80-step feature sequence; "features" the largest difference of the
CNN's features relative to their largest magnitude. "TensorRT parser" runs
``engines.tensorrt_ops.check_graph`` on both graphs (a static check against TensorRT's ONNX
support matrix; nothing is built). Weights are random (seeded): sizes and costs do not depend on
them.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engines  # noqa: E402
from affbatch.affect.runners import TemporalOutputs  # noqa: E402
from affbatch.models import rnns  # noqa: E402
from affbatch.models.backbones import backbone_width  # noqa: E402
from affbatch.models.cnn_rnn import CnnRnn, RNNAttention, architecture_name  # noqa: E402
from affbatch.models.vggface_gru_attn import ATTENTION_LENGTH, CROP_SIZE, SEQUENCE_LENGTH  # noqa: E402

BACKBONES = (("vgg16", "fc6"), ("vgg16", "pool"), ("resnet50", "pool"), ("densenet121", "pool"))
RNN_KINDS = ("lstm", "gru", "indrnn")


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward of ``module`` (see the module docstring)."""
    total = collections.Counter()

    def hook(m: nn.Module, args, out) -> None:
        y = out[0] if isinstance(out, tuple) else out
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total["macs"] += y.numel() * k
        elif isinstance(m, nn.Linear):
            total["macs"] += y.numel() * m.in_features
        elif isinstance(m, rnns.GRU | rnns.LSTM | rnns.IndRNN):
            steps = args[0].shape[0] * args[0].shape[1]
            u, gates = m.hidden_size, {"gru": 3, "lstm": 4, "indrnn": 1}[m.kind]
            for layer in range(m.num_layers):
                n_in = m.input_size if layer == 0 else u
                total["macs"] += steps * (u * n_in + u if m.kind == "indrnn" else gates * u * (n_in + u))
        if isinstance(m, RNNAttention):
            steps = args[0].shape[0] * args[0].shape[1]
            total["macs"] += steps * m.attention_length * (m.attn_v.numel() + m.units)

    kinds = (nn.Conv2d, nn.Linear, rnns.GRU, rnns.LSTM, rnns.IndRNN, RNNAttention)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total["macs"]


def tensorrt_check(*engines_: engines.Engine) -> str:
    try:
        from engines.tensorrt_ops import check_graph
    except ImportError:
        return "n/a"
    problems = [p for e in engines_ for p in check_graph(e.onnx_path)]
    return "ok" if not problems else f"{len(problems)} problems: {problems[0]}"


def measure(name: str, model: CnnRnn, cnn_engine, frames: int, cache: Path) -> dict:
    width = backbone_width(model.cnn)
    temporal_engine = engines.compile(
        TemporalOutputs(model.temporal),
        (torch.zeros(1, 3, width),),
        ["features"],
        ["valence_arousal"],
        {"features": {1: "time"}, "valence_arousal": {1: "time"}},
        runtime="onnxruntime",
        cache_dir=cache,
    )
    g = torch.Generator().manual_seed(1)
    x = torch.rand(frames, 3, CROP_SIZE, CROP_SIZE, generator=g) * 2 - 1
    window = torch.randn(1, SEQUENCE_LENGTH, width, generator=g).clamp(min=0)
    with torch.no_grad():
        f, y = model.cnn(x), model(x[None])[0]
        y_window = model.temporal(window)[0]
    (f_ort,) = cnn_engine(x.numpy())
    (y_ort,) = temporal_engine(f_ort[None])
    (y_window_ort,) = temporal_engine(window.numpy())
    cnn_macs = count_macs(model.cnn, x[:1])
    temporal_macs = count_macs(model.temporal, window) / SEQUENCE_LENGTH
    return {
        "architecture": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "cnn_parameters": sum(p.numel() for p in model.cnn.parameters()),
        "features": width,
        "gflops_per_frame": 2 * (cnn_macs + temporal_macs) / 1e9,
        "temporal_mflops_per_frame": 2 * temporal_macs / 1e6,
        "max_abs_diff_y": float(max(np.abs(y_ort - y.numpy()).max(), np.abs(y_window_ort - y_window.numpy()).max())),
        "features_rel_diff": float(np.abs(f_ort - f.numpy()).max() / max(1.0, float(f.abs().max()))),
        "tensorrt_parser": tensorrt_check(cnn_engine, temporal_engine),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--frames", type=int, default=2, help="crops checked end to end (default 2)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-onnx-") as tmp:
        cache = Path(tmp)
        for backbone, feed in BACKBONES:
            cnn_engine = None
            for rnn in RNN_KINDS:
                name = architecture_name(backbone, rnn, True, feed)
                torch.manual_seed(0)  # one backbone's weights for its three RNNs: one CNN graph
                model = CnnRnn(backbone, rnn, True, feed).eval()
                start = time.perf_counter()
                if cnn_engine is None:
                    axes = {"crops": {0: "faces"}, "features": {0: "faces"}}
                    example = (torch.zeros(2, 3, CROP_SIZE, CROP_SIZE),)
                    cnn_engine = engines.compile(
                        model.cnn, example, ["crops"], ["features"], axes, runtime="onnxruntime", cache_dir=cache
                    )
                row = measure(name, model, cnn_engine, args.frames, cache)
                row["seconds"] = round(time.perf_counter() - start, 1)
                rows.append(row)
                print(f"{name}: done in {row['seconds']} s", file=sys.stderr, flush=True)
    print("| architecture | parameters | F | GFLOPs/frame | of which RNN+attention (MFLOPs) "
          "| ONNX Runtime max abs diff y | features rel. diff | TensorRT parser |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['architecture']} | {r['parameters'] / 1e6:.2f} M | {r['features']} | {r['gflops_per_frame']:.2f} "
            f"| {r['temporal_mflops_per_frame']:.2f} | {r['max_abs_diff_y']:.1e} | {r['features_rel_diff']:.1e} "
            f"| {r['tensorrt_parser']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nFLOPs = 2 x multiply-accumulates (conv, linear, RNN, attention); window {SEQUENCE_LENGTH}, "
          f"attention length {ATTENTION_LENGTH}; random weights; torch {torch.__version__}.")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
