"""``python -m bench.runtimes``: each network alone in every runtime x precision here, side by side.

Issue 13's table: RetinaFace MobileNet-0.25 on a batch of 8 frames of 640x360 and VGG-16 to fc6
(``vggface-gru-attn``'s per-frame CNN) on 16 crops of 96x96, compiled by ``engines`` from the same
cached ONNX graph: ONNX Runtime fp32, OpenVINO fp32 and bf16, torch fp32 and bf16 (autocast,
channels-last); bf16 only where the CPU has it in hardware. The candidates are interleaved: each
round times every one once, so load from other processes falls on all of them alike. Medians
and spreads (min-max) of ``--repeats`` rounds after a warm-up; the CPU's model and flags first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

#: (name, what, batch shape, items per batch)
NETWORKS = (
    ("RetinaFace mnet-0.25", "8x3x360x640 frames", (8, 3, 360, 640)),
    ("VGG-16 to fc6", "16x3x96x96 crops", (16, 3, 96, 96)),
)


def candidates() -> list[tuple[str, str, bool]]:
    """(runtime, precision, channels_last) measured here."""
    from engines.cpuinfo import detect

    out = [("onnxruntime", "fp32", False), ("openvino", "fp32", False)]
    bf16 = detect().bf16_unavailable() is None
    if bf16:
        out.append(("openvino", "bf16", False))
    out.append(("torch", "fp32", True))
    if bf16:
        out.append(("torch", "bf16", True))
    return out


def networks():
    from safetensors.torch import load_file

    from affbatch.faces.detector import PACKAGED_WEIGHTS
    from affbatch.models import retinaface as rf
    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    def detector():
        return rf.build(load_file(str(PACKAGED_WEIGHTS)), "mobilenet0.25").eval()

    def vgg():
        torch.manual_seed(0)
        return VGGFaceGRUAttention().eval().cnn

    axes = {
        "RetinaFace mnet-0.25": ({"input": {0: "batch", 2: "height", 3: "width"}}, ["loc", "conf", "landmarks"]),
        "VGG-16 to fc6": ({"input": {0: "faces"}}, ["features"]),
    }
    return {"RetinaFace mnet-0.25": detector, "VGG-16 to fc6": vgg}, axes


def run(repeats: int) -> list[dict]:
    import engines
    from engines.base import EngineOptions

    makers, axes = networks()
    rows = []
    rng = np.random.default_rng(0)
    for name, what, shape in NETWORKS:
        x = (rng.random(shape, np.float32) * 255 - 117) if name.startswith("Retina") else rng.uniform(-1, 1, shape)
        x = x.astype(np.float32)
        dynamic, outputs = axes[name]
        engines_here = {}
        for runtime, precision, channels_last in candidates():
            module = makers[name]()
            options = EngineOptions(channels_last=channels_last)
            example = torch.zeros(1, *shape[1:])
            dyn = dict(dynamic) | {o: {0: "batch" if name.startswith("Retina") else "faces"} for o in outputs}
            engine = engines.compile(module, (example,), ["input"], outputs, dyn, runtime=runtime, device="cpu",
                                     precision=precision, options=options)  # fmt: skip
            engine(x)  # warm-up: kernels for this shape
            engines_here[(runtime, precision)] = engine
        times: dict = {k: [] for k in engines_here}
        for _ in range(repeats):  # interleaved: every candidate once per round
            for key, engine in engines_here.items():
                t0 = time.perf_counter()
                engine(x)
                times[key].append(time.perf_counter() - t0)
        for (runtime, precision), seconds in times.items():
            rates = sorted(shape[0] / s for s in seconds)
            rows.append({"network": name, "input": what, "runtime": runtime, "precision": precision,
                         "channels_last": runtime == "torch", "items_per_s_median": statistics.median(rates),
                         "items_per_s_min": rates[0], "items_per_s_max": rates[-1], "runs": repeats})  # fmt: skip
        del engines_here
    return rows


def markdown(rows: list[dict], cpu: dict) -> str:
    head = (
        f"{cpu['model']}, {cpu['cpus']} CPUs ({' '.join(cpu['features'])}): items/s, median (min–max) of "
        f"{rows[0]['runs']} interleaved rounds after a warm-up.\n\n"
    )
    labels = list(dict.fromkeys(f"{r['runtime']} {r['precision']}" for r in rows))
    lines = ["| network, batch | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name in dict.fromkeys(r["network"] for r in rows):
        cells = []
        for label in labels:
            r = next((r for r in rows if r["network"] == name and f"{r['runtime']} {r['precision']}" == label), None)
            spread = "" if r is None else f" ({r['items_per_s_min']:.1f}–{r['items_per_s_max']:.1f})"
            cells.append("–" if r is None else f"{r['items_per_s_median']:.1f}{spread}")
        what = next(r["input"] for r in rows if r["network"] == name)
        lines.append(f"| {name}, {what} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runtimes", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows and the CPU as JSON here")
    args = parser.parse_args(argv)
    from engines.cpuinfo import describe, summary

    cpu = summary()
    print(describe(cpu), flush=True)
    rows = run(args.repeats)
    print(markdown(rows, cpu))
    if args.out is not None:
        args.out.write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
