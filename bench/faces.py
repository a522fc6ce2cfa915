"""Throughput of ``affbatch score`` with faces on the CPU, next to its compute ceiling.

A 640x360 clip of one face (a real portrait, moving) is scored with the embedded prior and with
``vggface-gru-attn`` (an untrained init: the weights do not change the work). Each run scores one
warm-up copy and ``repeats`` timed copies of the clip in one ``affbatch score`` call, so models
load once, as in real use; a video's rate is its output frames over the seconds the manifest
records for it. The ceiling is the VGG-16 trunk up to fc6 at 96x96 alone on ONNX Runtime,
batch 32: with one face per frame, ``vggface-gru-attn`` cannot score faster than that.
"""

from __future__ import annotations

import shutil
import statistics
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch

from affbatch.score import ScoreOptions, score


def one_face_clip(path: Path, seconds: float, width: int = 640, height: int = 360, fps: int = 30) -> Path:
    from tests.face_media import portraits

    face = portraits(200)[0]
    frames = round(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = np.linspace(70, 150, width, dtype=np.uint8)[None, :, None]
            x = int((width - 200) / 2 + 120 * np.sin(k / 25))
            y = int((height - 200) / 2 + 30 * np.cos(k / 40))
            image[y : y + 200, x : x + 200] = face
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def untrained_checkpoint(folder: Path) -> Path:
    from affbatch.models.checkpoint import save_checkpoint
    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    torch.manual_seed(0)
    save_checkpoint(VGGFaceGRUAttention(), folder, trained=False)
    return folder


def per_video_rates(clip: Path, workdir: Path, model: str, repeats: int) -> dict:
    videos = workdir / f"videos-{abs(hash(model))}"
    videos.mkdir(exist_ok=True)
    for i in range(repeats + 1):  # copy 0 warms up
        shutil.copy(clip, videos / f"copy{i}.mp4")
    out = workdir / "faces.arrow"
    t0 = time.perf_counter()
    summary = score([videos], ScoreOptions(out=out, model=model))
    wall = time.perf_counter() - t0
    assert not summary.failed, summary.failed
    with pa.memory_map(str(workdir / "faces.videos.arrow")) as source:
        rows = ipc.open_file(source).read_all().to_pylist()
    rates = sorted(r["frames"] / r["seconds"] for r in rows if r["video"] != "copy0.mp4")
    return {
        "fps_median": statistics.median(rates),
        "fps_min": rates[0],
        "fps_max": rates[-1],
        "runs": len(rates),
        "frames": rows[0]["frames"],
        "wall_s": wall,
    }


def vgg_ceiling(repeats: int, batch: int = 32) -> dict:
    import engines
    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    torch.manual_seed(0)
    trunk = VGGFaceGRUAttention().cnn.eval()
    x = torch.zeros(batch, 3, 96, 96)
    engine = engines.compile(trunk, (x,), ["crops"], ["fc6"], {"crops": {0: "n"}, "fc6": {0: "n"}})
    data = np.random.default_rng(0).uniform(-1, 1, size=(batch, 3, 96, 96)).astype(np.float32)
    engine(data)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine(data)
        rates.append(batch / (time.perf_counter() - t0))
    rates.sort()
    return {"fps_median": statistics.median(rates), "fps_min": rates[0], "fps_max": rates[-1], "runs": repeats}


def run(workdir: Path, seconds: float, repeats: int) -> list[dict]:
    clip = one_face_clip(workdir / "one_face_360p.mp4", seconds)
    checkpoint = untrained_checkpoint(workdir / "vggface-gru-attn-init")
    rows = [
        {"what": "score, --model none (decode only)", **per_video_rates(clip, workdir, "none", repeats)},
        {"what": "score, expression prior (default)", **per_video_rates(clip, workdir, "auto", repeats)},
        {
            "what": "score, vggface-gru-attn (untrained init)",
            **per_video_rates(clip, workdir, str(checkpoint), repeats),
        },
        {"what": "ceiling: VGG-16 to fc6 at 96x96, ONNX Runtime, batch 32", **vgg_ceiling(repeats)},
    ]
    return rows


def markdown(rows: list[dict], repeats: int) -> str:
    lines = [
        f"One-face 640x360 clip, 30 fps: frames/s per video, median (min–max) of {repeats} videos "
        "after a warm-up one; ceiling: faces/s.",
        "",
        "| what | frames/s |",
        "|---|---|",
    ]
    lines += [f"| {r['what']} | {r['fps_median']:.1f} ({r['fps_min']:.1f}–{r['fps_max']:.1f}) |" for r in rows]
    return "\n".join(lines) + "\n"
