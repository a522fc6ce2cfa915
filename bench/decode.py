"""Decode throughput of each decoder backend, side by side, on this machine.

For each resolution (360p, 720p, 1080p) and source rate (30 and 60 fps), and for --fps 30 and
native, it times (after one warm-up run) the probe (demuxing every timestamp), the decoder
delivering the selected RGB frames, and ``affbatch score --model none`` end to end (probe, decode,
traces and manifest: the face models are measured by the ``models`` and ``faces`` suites); it
prints the median and the spread (min-max) of the repeats and the peak RSS of the decode runs,
and writes JSON and Markdown to --out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affbatch.pipeline import ScoreOptions
from affbatch.run import score_run
from affbatch.video import decoders
from affbatch.video.framerate import select_frames
from affbatch.video.probe import probe
from bench.measure import PeakMemory, summarise, timed
from bench.media import write_scene_clip
from bench.report import memory, rate

#: Measured by the gpu suite (``bench.gpu``), not here.
GPU_DECODERS = ("dali", "nvcodec")
RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}


def bench_clip(path: Path, decoder_name: str, fps_mode: str, repeats: int, batch_size: int, workdir: Path) -> dict:
    decoder = decoders.get_decoder(decoder_name)
    info = probe(path)
    slots, _ = select_frames(info, fps_mode)
    wanted = np.unique(slots)

    def decode():
        for _ in decoder.frames(info, wanted, batch_size):
            pass

    def end_to_end():
        options = ScoreOptions(fps=fps_mode, model="none", decoder=decoder_name, batch_size=batch_size)
        score_run([path], workdir / "bench.arrow", options)

    probed = summarise(info.frames, timed(lambda: probe(path), repeats))
    with PeakMemory() as mem:
        decoded = summarise(len(slots), timed(decode, repeats))
    return {
        "source_frames": info.frames,
        "output_frames": len(slots),
        "converted_frames": len(wanted),
        "probe": probed,
        "decode": decoded,
        "score": summarise(len(slots), timed(end_to_end, repeats)),
        "decode_memory": mem.result(),
    }


def run(workdir: Path, seconds: float, repeats: int, batch_size: int, quick: bool = False) -> list[dict]:
    """Every resolution, source rate, decoder and --fps mode; ``quick`` leaves out native on 30 fps
    sources (the same frames as --fps 30)."""
    # H.264 clips on the CPU: the GPU decoders (DALI's CPU backend takes no H.264) are the gpu suite's.
    available = [name for name, why in decoders.availability().items() if why is None and name not in GPU_DECODERS]
    results = []
    for res, (w, h) in RESOLUTIONS.items():
        for source_fps in (30, 60):
            clip = write_scene_clip(workdir / f"{res}_{source_fps}.mp4", w, h, source_fps, seconds)
            for decoder_name in available:
                for fps_mode in ("30",) if quick and source_fps == 30 else ("30", "native"):
                    r = bench_clip(clip, decoder_name, fps_mode, repeats, batch_size, workdir)
                    r.update(resolution=res, source_fps=source_fps, decoder=decoder_name, fps_mode=fps_mode)
                    results.append(r)
                    print(row(r), flush=True)
    return results


HEADER = (
    "| clip | decoder | --fps | frames out | converted | probe frames/s | decode frames/s | "
    "score --model none frames/s | decode peak RSS MiB |"
)


def row(r: dict) -> str:
    return (
        f"| {r['resolution']} {r['source_fps']} fps | {r['decoder']} | {r['fps_mode']} | {r['output_frames']} | "
        f"{r['converted_frames']} | {rate(r['probe'], 0)} | {rate(r['decode'], 0)} | {rate(r['score'], 0)} | "
        f"{memory(r['decode_memory'])} |"
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
