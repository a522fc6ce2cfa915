"""Throughput of each model stage alone, per runtime and batch size, next to its compute floor.

Stages: RetinaFace on decoded frames of 360p, 720p and 1080p face clips (shrunk to 640 pixels,
as ``affbatch score`` runs it), the expression prior on 96x96 crops, the VGG-16 trunk to fc6 of
``vggface-gru-attn`` on crops, and its GRU + attention on windows of 80 features (one track;
frames/s counts the 48 new frames each window emits). Each: every runtime here (ONNX Runtime,
OpenVINO, torch) in every precision it runs here (bf16 too where the CPU has it) and a few batch
sizes; median and spread of repeated runs after a warm-up; the peak RSS;
the FLOPs per item counted by ``bench.roofline`` and the fraction of the compute floor reached.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import torch

from affbatch.faces.crops import CROP_SIZE
from bench import roofline
from bench.measure import PeakMemory, summarise, timed
from bench.media import face_clip
from bench.report import markdown_table, memory, number, percent, rate

RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}

#: Items per timed run and batch sizes, (quick, full).
SIZES = {
    "detector": ((8, (1, 8)), (64, (1, 4, 16))),
    "prior": ((64, (1, 64)), (256, (1, 16, 64))),
    "vgg16-fc6": ((16, (1, 16)), (96, (1, 8, 32))),
    "gru-attention": ((4, (1,)), (16, (1,))),
}


def runtimes_for(device: str) -> list[str]:
    """The runtimes that run on ``device`` here, in ``engines.RUNTIMES`` order."""
    import engines

    kind = "cuda" if device.startswith("cuda") else "cpu"
    out = []
    for runtime, why in engines.availability().items():
        if isinstance(why, dict):  # per device kind
            why = why.get(kind, f"not for {kind}")
        elif why is None and runtime == "onnxruntime" and kind == "cuda":
            import onnxruntime as ort

            why = None if "CUDAExecutionProvider" in ort.get_available_providers() else "no CUDA provider"
        elif why is None and runtime == "tensorrt" and kind == "cpu":
            why = "needs a GPU"
        if why is None:
            out.append(runtime)
    return out


def precisions_for(runtime: str, device: str) -> list[str]:
    """The precisions ``runtime`` runs on ``device`` here: fp32, and on the CPU bf16 in OpenVINO
    and torch where the CPU has it in hardware (``engines.cpuinfo``)."""
    if device.startswith("cuda") or runtime not in ("openvino", "torch"):
        return ["fp32"]
    from engines.cpuinfo import detect

    return ["fp32", "bf16"] if detect().bf16_unavailable() is None else ["fp32"]


def decoded_frames(path: Path, count: int) -> np.ndarray:
    with av.open(str(path)) as container:
        images = [f.to_ndarray(format="rgb24") for _, f in zip(range(count), container.decode(video=0), strict=False)]
    return np.stack(images)


def _batched(fn, items: np.ndarray, batch: int):
    def run():
        for i in range(0, len(items), batch):
            fn(items[i : i + batch])

    return run


def _row(stage: str, what: str, runtime: str, batch: int, count: int, seconds: list[float], flops: float, gflops_s):
    runtime, _, precision = runtime.partition(" ")
    row = {"stage": stage, "input": what, "runtime": runtime, "precision": precision or "fp32", "batch": batch}
    row.update(summarise(count, seconds))
    row["gflops_per_item"] = flops / 1e9
    return apply_floor([row], gflops_s)[0]


def floor_note(machine: dict) -> str:
    """How the floor's rate was measured, for the tables' captions."""
    rate = machine.get("floor_gflops")
    if rate is None:
        return "not measured"
    peaks = [machine[k] for k in ("peak_start", "peak_end") if k in machine]
    if not peaks:
        return f"fp32 peak {rate:.0f} GFLOP/s"
    best = max(peaks, key=lambda p: p["gflops"])
    medians = ", ".join(f"{max(k['gflops_median'] for k in p['kernels']):.0f}" for p in peaks)
    per: dict[str, float] = {}
    for p in peaks:
        for precision, g in p.get("per_precision", {}).items():
            per[precision] = max(per.get(precision, 0.0), g)
    each = "; per precision: " + ", ".join(f"{p} {g:.0f}" for p, g in per.items()) if len(per) > 1 else ""
    return (
        f"peak {rate:.0f} GFLOP/s (best run of {best['kernel']}, the fastest of the dense kernels in any "
        f"precision this machine offers, measured at the start and end of the run; best medians {medians}{each})"
    )


def apply_floor(rows: list[dict], gflops_s: float) -> list[dict]:
    """Set each row's compute floor and the fraction of it reached, for a peak rate of ``gflops_s``."""
    for row in rows:
        row["floor_fps"] = roofline.floor_fps(gflops_s, row["gflops_per_item"] * 1e9)
        row["floor_fraction"] = row["fps_median"] / row["floor_fps"]
    return rows


def measure_stage(fn, items: np.ndarray, batch: int, repeats: int, budget_s: float) -> tuple[int, list[float]]:
    """Seconds of ``repeats`` runs of ``fn`` over ``items`` in batches of ``batch``, after a warm-up.

    A run covers at most what fits in ``budget_s`` at the warmed-up speed (whole batches, at least
    one): on a busy machine torch's batch-1 calls can be a hundred times slower than alone, and the
    suite must still end. Returns the items per run and the seconds of each run.
    """
    fn(items[:batch])  # warm-up: sessions, allocator pools, kernels for this shape
    t0 = time.perf_counter()
    fn(items[:batch])
    per_item = max(time.perf_counter() - t0, 1e-9) / len(items[:batch])
    count = max(batch, min(len(items), int(budget_s / per_item) // batch * batch))
    return count, timed(_batched(fn, items[:count], batch), repeats, warmup=lambda: None)


def run(workdir: Path, repeats: int, quick: bool, device: str, gflops_s: float) -> list[dict]:
    from affbatch.affect.runners import AffectIdentity, FrameAffect, SequenceAffect
    from affbatch.faces.detector import FaceDetector
    from affbatch.models.expression_prior import load_expression_prior
    from affbatch.models.vggface_gru_attn import ATTENTION_LENGTH, FC6_UNITS, SEQUENCE_LENGTH, VGGFaceGRUAttention

    sizes = {stage: s[0 if quick else 1] for stage, s in SIZES.items()}
    budget_s = 1.0 if quick else 5.0
    rows: list[dict] = []

    def stage(name: str, what: str, runtime: str, fn, items: np.ndarray, batch: int, flops: float) -> None:
        with PeakMemory() as mem:
            count, seconds = measure_stage(fn, items, batch, repeats, budget_s)
        row = _row(name, what, runtime, batch, count, seconds, flops, gflops_s)
        row["memory"] = mem.result()
        rows.append(row)
        print("| " + " | ".join(table_row(row)) + " |", flush=True)

    # every runtime here in every precision it runs here: "openvino bf16", ...
    runtimes = [f"{r} {p}" for r in runtimes_for(device) for p in precisions_for(r, device)]

    def where(label: str) -> dict:
        runtime, _, precision = label.partition(" ")
        return {"runtime": runtime, "device": device, "precision": precision}

    count, batches = sizes["detector"]
    frames = {}
    for res, (w, h) in RESOLUTIONS.items():
        clip = face_clip(workdir / f"stage_{res}.mp4", w, h, 1, count / 30)
        frames[res] = decoded_frames(clip, count)
    for runtime in runtimes:
        detector = FaceDetector.default(**where(runtime))
        for res, images in frames.items():
            flops = roofline.detector_flops(detector.model, *images.shape[1:3], detector.options.max_side)
            for batch in batches:
                stage("detector", f"{res} frames", runtime, detector, images, batch, flops)
        del detector

    rng = np.random.default_rng(0)
    prior_module = load_expression_prior()
    prior_flops = roofline.crop_flops(prior_module)
    count, batches = sizes["prior"]
    crops = rng.uniform(-1, 1, size=(count, 3, CROP_SIZE, CROP_SIZE)).astype(np.float32)
    for runtime in runtimes:
        prior = FrameAffect(prior_module, AffectIdentity("prior", None, ""), **where(runtime))
        for batch in batches:
            stage("prior", "96x96 crops", runtime, prior, crops, batch, prior_flops)
        del prior

    torch.manual_seed(0)
    module = VGGFaceGRUAttention().eval()
    cnn_flops = roofline.crop_flops(module.cnn)
    window, warmup = SEQUENCE_LENGTH, ATTENTION_LENGTH
    # Each window emits window - warmup new frames of its track: the rate is counted in those.
    per_frame = roofline.count_flops(module.temporal, torch.zeros(1, window, FC6_UNITS)) / (window - warmup)
    count, batches = sizes["vgg16-fc6"]
    crops = rng.uniform(-1, 1, size=(count, 3, CROP_SIZE, CROP_SIZE)).astype(np.float32)
    windows = rng.normal(size=(sizes["gru-attention"][0], 1, window, FC6_UNITS)).astype(np.float32)
    for runtime in runtimes:
        affect = SequenceAffect(module, AffectIdentity("vgg", None, ""), window, warmup, **where(runtime))
        for batch in batches:
            stage("vgg16-fc6", "96x96 crops", runtime, affect.features, crops, batch, cnn_flops)
        with PeakMemory() as mem:
            count, seconds = measure_stage(lambda w, a=affect: a.temporal(w[0]), windows, 1, repeats, budget_s)
        emitted = count * (window - warmup)
        row = _row("gru-attention", f"windows of {window}", runtime, 1, emitted, seconds, per_frame, gflops_s)
        row["memory"] = mem.result()
        rows.append(row)
        print("| " + " | ".join(table_row(row)) + " |", flush=True)
        del affect
    return rows


HEADERS = ("stage", "input", "runtime", "batch", "items/s", "GFLOPs/item", "floor items/s", "of floor", "peak RSS MiB")


def table_row(r: dict) -> list[str]:
    return [
        r["stage"],
        r["input"],
        f"{r['runtime']} {r['precision']}" if "precision" in r else r["runtime"],
        str(r["batch"]),
        rate(r),
        number(r["gflops_per_item"], 3),
        number(r["floor_fps"], 0),
        percent(r["floor_fraction"]),
        memory(r.get("memory")),
    ]


def markdown(rows: list[dict], machine: dict, repeats: int) -> str:
    floor = floor_note(machine)
    head = (
        f"Model stages alone on {machine.get('device', 'cpu')} ({machine['cpus']} CPUs): items/s, median (min–max) of "
        f"{repeats} runs after a warm-up (detector: frames, shrunk to 640 px; prior and VGG-16: faces; "
        f"GRU + attention: track frames, 48 new per window of 80). Floor: {floor} over the counted FLOPs "
        "per item. "
        "Peak RSS of the bench process during the run (+ its increase).\n\n"
    )
    return head + markdown_table(HEADERS, [table_row(r) for r in rows])
