"""The GPU suite: each GPU decoder alone (NVDEC, no models) and ``score`` end to end on the GPU.

Clips: 360p, 720p and 1080p H.264 at 30 fps with one and two real faces. Per clip:

* **decode**: each GPU decoder here (PyNvVideoCodec, DALI) delivering the 30 fps selection as
  CUDA tensors, nothing else (NVDEC is the bound the pipeline works against);
* **score**: a Scorer (``runtime`` torch CUDA by default, the expression prior) with that
  decoder: frames never leave the GPU; frames/s, as a fraction of the decoder alone;
* **parity**: its traces against the CPU path's (PyAV + ONNX Runtime) on the same clip: largest
  box difference (pixels) and valence/arousal difference, where both found the same faces.

GPU memory: the peak torch allocated during the measurement and the device's used memory after
it (NVDEC's surfaces are not torch's, so the second counts them). ``churn`` decodes many short
clips with one decoder and reports RSS and GPU memory every so often: it must stay flat.
Needs a CUDA device; ``scripts/gpu_check.py`` runs it within the GPU check's time.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path

import numpy as np

from bench.media import face_clip
from bench.report import markdown_table, number, rate

RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
GPU_DECODERS = ("nvcodec", "dali")


def gpu_memory(device: str) -> dict:
    import torch

    if not device.startswith("cuda"):  # the CPU dry run of this suite (its test)
        return {"gpu_peak_mib": 0.0, "gpu_used_mib": 0.0}
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return {
        "gpu_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20,
        "gpu_used_mib": (total - free) / 2**20,
    }


def _timed_rates(fn, frames: int, repeats: int, device: str) -> tuple[dict, dict]:
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    fn()  # warm-up: decoder sessions, engines at this size, allocator pools
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - t0)
    rates = sorted(frames / s for s in seconds)
    summary = {"fps_median": statistics.median(rates), "fps_min": rates[0], "fps_max": rates[-1], "runs": len(rates)}
    return summary, gpu_memory(device)


def decode_alone(decoder_name: str, path: Path, device: str, batch_size: int, repeats: int) -> dict:
    """Frames/s of one GPU decoder delivering ``path``'s 30 fps selection, no models."""
    from affbatch.video.decoders import get_decoder
    from affbatch.video.framerate import select_frames
    from affbatch.video.probe import probe

    decoder = get_decoder(decoder_name, device)
    info = probe(path)
    slots, _ = select_frames(info, "30")
    wanted = np.unique(slots)

    def once() -> None:
        for batch in decoder.frames(info, wanted, batch_size):
            assert batch.device == device or not device.startswith("cuda"), batch.device

    rates, memory = _timed_rates(once, len(slots), repeats, device)
    return {**rates, "frames": len(slots), "memory": memory}


def score_on_gpu(scorer, path: Path, repeats: int, device: str) -> tuple[dict, object]:
    """Frames/s of ``scorer.score(path)`` (frames from the decoder to valence/arousal on the GPU)."""
    holder = {}

    def once() -> None:
        result = scorer.score(path)
        if not result.ok:
            raise RuntimeError(f"{path}: {result.error}")
        holder["table"] = result.table

    frames = len(scorer.score(path).table.column("frame").unique())
    rates, memory = _timed_rates(once, frames, repeats, device)
    return {**rates, "frames": frames, "memory": memory}, holder["table"]


def parity(gpu, cpu) -> dict:
    """Largest differences of the GPU traces from the CPU's (same rows needed: same faces found)."""
    if gpu.num_rows != cpu.num_rows or gpu["track"].to_pylist() != cpu["track"].to_pylist():
        return {"rows_gpu": gpu.num_rows, "rows_cpu": cpu.num_rows, "same_faces": False}

    def largest(columns) -> float:
        values = [
            np.abs(gpu[c].to_numpy(zero_copy_only=False).astype(float) - cpu[c].to_numpy(zero_copy_only=False))
            for c in columns
        ]
        return float(max(np.nanmax(v) if np.isfinite(v).any() else 0.0 for v in values))

    return {
        "rows": gpu.num_rows,
        "same_faces": True,
        "box_px": largest(("x1", "y1", "x2", "y2")),
        "va": largest(("valence", "arousal")),
    }


def torch_index(device: str) -> int:
    return int(device.partition(":")[2] or 0)


def make_clips(workdir: Path, seconds: float, resolutions=tuple(RESOLUTIONS)) -> dict[str, Path]:
    clips = {}
    for res in resolutions:
        w, h = RESOLUTIONS[res]
        for faces in (1, 2):
            clips[f"{res} {faces} face{'s' if faces > 1 else ''}"] = face_clip(
                workdir / f"gpu_{res}_{faces}.mp4", w, h, faces, seconds
            )
    return clips


def run(
    workdir: Path,
    seconds: float,
    repeats: int,
    device: str,
    batch_size: int = 64,
    runtime: str = "torch",
    precision: str = "fp32",
    decoders: tuple[str, ...] | None = None,
    deadline: float | None = None,
    resolutions=tuple(RESOLUTIONS),
) -> dict:
    """Everything the module docstring says, until ``deadline`` (time.monotonic) if given."""
    from affbatch.pipeline import Scorer
    from affbatch.video.decoders import availability

    usable = availability(device)
    decoders = tuple(d for d in (decoders or GPU_DECODERS) if usable.get(d) is None)
    missing = {d: usable.get(d) for d in GPU_DECODERS if d not in decoders}
    device = f"cuda:{torch_index(device)}" if device.startswith("cuda") else device
    clips = make_clips(workdir, seconds, resolutions)
    rows: list[dict] = []
    cpu = Scorer(
        model="prior", runtime="onnxruntime", device="cpu", precision="fp32", decoder="pyav", batch_size=batch_size
    )
    cpu_tables = {name: cpu.score(path).table for name, path in clips.items()}
    del cpu
    for decoder in decoders:
        scorer = Scorer(
            model="prior", runtime=runtime, device=device, precision=precision, decoder=decoder, batch_size=batch_size
        )
        for name, path in clips.items():
            if deadline is not None and time.monotonic() > deadline:
                rows.append({"clip": name, "decoder": decoder, "skipped": "time budget spent"})
                continue
            alone = decode_alone(decoder, path, device, batch_size, repeats)
            scored, table = score_on_gpu(scorer, path, repeats, device)
            rows.append(
                {
                    "clip": name,
                    "decoder": decoder,
                    "runtime": f"{runtime} {precision}",
                    "decode": alone,
                    "score": scored,
                    "fraction_of_decode": scored["fps_median"] / alone["fps_median"],
                    "parity": parity(table, cpu_tables[name]),
                }
            )
            print(line(rows[-1]), flush=True)
        del scorer
        gc.collect()
    return {"rows": rows, "decoders": list(decoders), "not_available": missing}


def churn(decoder_name: str, workdir: Path, device: str, clips: int = 500, every: int = 50) -> list[dict]:
    """Memory while one decoder decodes ``clips`` short clips (1 s, 160x120, sizes varying)."""
    import av
    import torch

    from affbatch.video.decoders import get_decoder
    from affbatch.video.probe import probe

    # H.264 for NVDEC; VP9 for DALI's CPU backend (all it takes besides VP8 and MJPEG).
    codec, suffix = ("libx264", "mp4") if device.startswith("cuda") else ("libvpx-vp9", "webm")
    sources = []
    for k, (w, h) in enumerate(((160, 120), (176, 144), (128, 96))):
        path = workdir / f"churn_{k}.{suffix}"
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=30)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for i in range(30):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), i * 8, np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        sources.append(probe(path))
    decoder = get_decoder(decoder_name, device)
    samples = []
    for n in range(1, clips + 1):
        info = sources[n % len(sources)]
        for _ in decoder.frames(info, np.arange(info.frames), 16):
            pass
        if n % every == 0 or n == 1:
            sample = {"clips": n, "rss_mib": rss_mib()}
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
                sample |= gpu_memory(device)
            samples.append(sample)
    return samples


def rss_mib() -> float:
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) / 1024
    return float("nan")


def line(r: dict) -> str:
    if "skipped" in r:
        return f"{r['clip']}, {r['decoder']}: skipped ({r['skipped']})"
    p = r["parity"]
    same = f"box {p['box_px']:.3g} px, va {p['va']:.3g}" if p["same_faces"] else f"rows {p['rows_gpu']}/{p['rows_cpu']}"
    return (
        f"{r['clip']}, {r['decoder']}: decode {rate(r['decode'])}, score {rate(r['score'])} frames/s "
        f"({100 * r['fraction_of_decode']:.0f}% of decode), GPU {r['score']['memory']['gpu_used_mib']:.0f} MiB; "
        f"vs CPU: {same}"
    )


def markdown(results: dict, machine: dict, repeats: int) -> str:
    headers = [
        "clip",
        "decoder",
        "decode frames/s",
        "score frames/s",
        "score / decode",
        "GPU MiB (torch peak, device used)",
        "max box diff px",
        "max va diff",
    ]
    rows = []
    for r in results["rows"]:
        if "skipped" in r:
            rows.append([r["clip"], r["decoder"], "–", "–", "–", "–", "–", r["skipped"]])
            continue
        p, m = r["parity"], r["score"]["memory"]
        rows.append(
            [
                r["clip"],
                r["decoder"],
                rate(r["decode"]),
                rate(r["score"]),
                number(r["fraction_of_decode"], 2),
                f"{m['gpu_peak_mib']:.0f}, {m['gpu_used_mib']:.0f}",
                number(p.get("box_px"), 4) if p["same_faces"] else f"rows {p['rows_gpu']} vs {p['rows_cpu']}",
                number(p.get("va"), 5) if p["same_faces"] else "–",
            ]
        )
    head = (
        f"GPU suite on {machine.get('gpu', machine.get('device'))}: medians of {repeats} runs (min–max); "
        f"score = the expression prior, frames kept on the GPU; parity against PyAV + ONNX Runtime on the CPU."
    )
    absent = "; ".join(f"{k}: {v}" for k, v in results.get("not_available", {}).items())
    return head + "\n\n" + markdown_table(headers, rows) + (f"\n\nnot measured: {absent}" if absent else "")
