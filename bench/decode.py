"""Decode throughput of each decoder backend, side by side, on this machine.

For each resolution (360p, 720p) and source rate (30 and 60 fps), and for --fps 30 and
native, it times (after one warm-up run) the probe (demuxing every timestamp), the decoder
delivering the selected RGB frames, and ``affbatch score`` end to end; it prints the median and
the spread (min-max) of the repeats and writes JSON and Markdown to --out.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from affbatch import decoders
from affbatch.probe import probe
from affbatch.score import ScoreOptions, score, select_frames
from bench.media import write_scene_clip

RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720)}


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: page cache, codec initialisation
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summarise(frames: int, seconds: list[float]) -> dict:
    rates = sorted(frames / s for s in seconds)
    return {
        "frames": frames,
        "fps_median": statistics.median(rates),
        "fps_min": rates[0],
        "fps_max": rates[-1],
        "runs": len(rates),
    }


def bench_clip(path: Path, decoder_name: str, fps_mode: str, repeats: int, batch_size: int, workdir: Path) -> dict:
    decoder = decoders.get_decoder(decoder_name)
    info = probe(path)
    slots, _ = select_frames(info, fps_mode)
    wanted = np.unique(slots)

    def decode():
        for _ in decoder.frames(info, wanted, batch_size):
            pass

    def end_to_end():
        score(
            [path], ScoreOptions(out=workdir / "bench.arrow", fps=fps_mode, decoder=decoder_name, batch_size=batch_size)
        )

    return {
        "source_frames": info.frames,
        "output_frames": len(slots),
        "converted_frames": len(wanted),
        "probe": summarise(info.frames, timed(lambda: probe(path), repeats)),
        "decode": summarise(len(slots), timed(decode, repeats)),
        "score": summarise(len(slots), timed(end_to_end, repeats)),
    }


def run(workdir: Path, seconds: float, repeats: int, batch_size: int) -> list[dict]:
    available = [name for name, why in decoders.availability().items() if why is None]
    results = []
    for res, (w, h) in RESOLUTIONS.items():
        for source_fps in (30, 60):
            clip = write_scene_clip(workdir / f"{res}_{source_fps}.mp4", w, h, source_fps, seconds)
            for decoder_name in available:
                for fps_mode in ("30", "native"):
                    r = bench_clip(clip, decoder_name, fps_mode, repeats, batch_size, workdir)
                    r.update(resolution=res, source_fps=source_fps, decoder=decoder_name, fps_mode=fps_mode)
                    results.append(r)
                    print(row(r), flush=True)
    return results


HEADER = "| clip | decoder | --fps | frames out | converted | probe frames/s | decode frames/s | score frames/s |"


def fmt(s: dict) -> str:
    return f"{s['fps_median']:.0f} ({s['fps_min']:.0f}–{s['fps_max']:.0f})"


def row(r: dict) -> str:
    return (
        f"| {r['resolution']} {r['source_fps']} fps | {r['decoder']} | {r['fps_mode']} | {r['output_frames']} | "
        f"{r['converted_frames']} | {fmt(r['probe'])} | {fmt(r['decode'])} | {fmt(r['score'])} |"
    )


def markdown(results: list[dict], machine: dict, repeats: int) -> str:
    lines = [
        f"Decode throughput on {machine['cpus']} CPUs: median (min–max) of "
        f"{repeats} runs after a warm-up. Frames/s count output frames (probe: source frames).",
        "",
        HEADER,
        "|---" * (HEADER.count("|") - 1) + "|",
    ]
    lines += [row(r) for r in results]
    return "\n".join(lines) + "\n"
