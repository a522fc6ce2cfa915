"""``python -m bench scale``: frames/s of one machine with 1..N worker processes, beside one
process using every core (the ``--workers 1`` default on a CPU), and the per-video cost a worker
process adds.

The workload is ``affbatch score``'s default model (the embedded prior, with RetinaFace) on
clips of one real face at 640x360, 30 fps, of mixed lengths (so longest-first has work to do).
Each configuration's workers are started once (their start-up is reported apart: a run pays
it once) and scored over the whole set ``repeats`` times after a warm-up video; figures are
median frames/s with min-max. The per-video cost: many short clips through one process here
and through one worker process with the same cores, (t_worker - t_here) / videos.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from affbatch.pipeline import ScoreOptions, Scorer
from affbatch.scale.local import WorkerPool
from affbatch.video.inputs import InputVideo
from bench.measure import rates_summary
from bench.media import face_clip
from bench.report import markdown_table, rate

#: Lengths (seconds) of the clips of one timed pass, relative to --seconds.
MIX = (2.0, 1.5, 1.0, 1.0, 0.75, 0.5, 0.5, 0.25)
#: Clips of the per-video cost measurement, and their length (s).
SHORT_CLIPS, SHORT_SECONDS = 16, 0.5


def clips(workdir: Path, seconds: float) -> tuple[list[InputVideo], InputVideo, list[InputVideo]]:
    """The timed set, a warm-up clip, and the short clips."""
    cache: dict[float, Path] = {}

    def make(name: str, length: float) -> InputVideo:
        length = max(round(length * 30) / 30, 10 / 30)
        if length not in cache:
            cache[length] = face_clip(workdir / f"scale_{len(cache)}.mp4", 640, 360, 1, length)
        path = workdir / name
        if path != cache[length]:
            shutil.copy(cache[length], path)
        return InputVideo(path, name)

    timed = [make(f"mix_{i}.mp4", seconds * m) for i, m in enumerate(MIX)]
    warm = make("warm.mp4", seconds * MIX[-1])
    short = [make(f"short_{i:02d}.mp4", SHORT_SECONDS) for i in range(SHORT_CLIPS)]
    return timed, warm, short


def frames_of(results) -> int:
    total = 0
    for r in results:
        if not r.ok:
            raise RuntimeError(f"bench clip failed: {r.name}: {r.error}")
        total += r.row.frames
    return total


def _passes(score, videos, warm, repeats) -> dict:
    frames_of(score([warm]))
    seconds, frames = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        frames = frames_of(score(videos))
        seconds.append(time.perf_counter() - t0)
    return {**rates_summary([frames / s for s in seconds], frames), "seconds": seconds}


def in_process(options: ScoreOptions, videos, warm, repeats) -> dict:
    t0 = time.perf_counter()
    scorer = Scorer(options)
    start = time.perf_counter() - t0
    result = _passes(lambda vs: list(scorer.score_many(vs)), videos, warm, repeats)
    return {"config": "1 process, every core", "workers": 0, "startup_s": start, **result}


def pooled(options: ScoreOptions, workers: int, videos, warm, repeats, pin: bool = True) -> dict:
    t0 = time.perf_counter()
    with WorkerPool(options, workers, pin=pin) as pool:
        start = time.perf_counter() - t0
        result = _passes(lambda vs: list(pool.score_many(vs)), videos, warm, repeats)
    shares = pool.shares if pin and workers > 1 else None
    threads = f"{len(shares[0])} core(s) each" if shares and shares[0] else "every core"
    return {"config": f"{workers} worker process(es), {threads}", "workers": workers, "startup_s": start, **result}


def per_video_cost(options: ScoreOptions, short, warm, repeats) -> dict:
    """Seconds a worker process adds per video over scoring here, same cores, short clips."""
    here = in_process(options, short, warm, repeats)
    there = pooled(options, 1, short, warm, repeats, pin=False)
    n = len(short)
    t_here, t_there = (sorted(r["seconds"])[len(r["seconds"]) // 2] for r in (here, there))
    return {
        "videos": n,
        "frames_per_video": here["frames"] // n,
        "here_s_per_video": t_here / n,
        "worker_s_per_video": t_there / n,
        "overhead_s_per_video": (t_there - t_here) / n,
    }


def run(workdir: Path, seconds: float, repeats: int, device: str, max_workers: int | None) -> dict:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    max_workers = max_workers or max(2, cpus)
    options = ScoreOptions(model="auto", device=device)
    videos, warm, short = clips(workdir, seconds)
    rows = [in_process(options, videos, warm, repeats)]
    print(line(rows[-1]), flush=True)
    for workers in range(1, max_workers + 1):
        rows.append(pooled(options, workers, videos, warm, repeats))
        print(line(rows[-1]), flush=True)
    cost = per_video_cost(options, short, warm, repeats)
    print(
        f"per video: {cost['worker_s_per_video']:.3f} s in a worker vs {cost['here_s_per_video']:.3f} s here "
        f"({cost['frames_per_video']} frames): {cost['overhead_s_per_video'] * 1000:+.0f} ms",
        flush=True,
    )
    base = rows[0]["fps_median"]
    for row in rows:
        row["vs_one_process"] = row["fps_median"] / base
        # Sizing: an hour of 30 fps video is 108,000 output frames.
        row["video_hours_per_hour"] = row["fps_median"] * 3600 / (30 * 3600)
    return {"cpus": cpus, "clip": "640x360, 1 face, 30 fps", "configs": rows, "per_video": cost}


def line(row: dict) -> str:
    return f"{row['config']}: {rate(row)} frames/s ({row['frames']} frames per pass), start-up {row['startup_s']:.1f} s"


def markdown(results: dict, machine: dict, repeats: int) -> str:
    head = (
        f"# bench scale\n\n{machine.get('date')}, {results['cpus']} CPUs, {machine.get('device')}; "
        f"clips {results['clip']}, prior model; median of {repeats} passes (min-max)\n\n"
    )
    rows = [
        [
            r["config"],
            rate(r),
            f"{r['vs_one_process']:.2f}x",
            f"{r['video_hours_per_hour']:.2f}",
            f"{r['startup_s']:.1f}",
        ]
        for r in results["configs"]
    ]
    table = markdown_table(["configuration", "frames/s", "vs 1 process", "video-hours per hour", "start-up (s)"], rows)
    c = results["per_video"]
    tail = (
        f"\nPer-video cost of a worker process ({c['videos']} clips of {c['frames_per_video']} frames): "
        f"{c['worker_s_per_video']:.3f} s per video in a worker vs {c['here_s_per_video']:.3f} s in one process, "
        f"{c['overhead_s_per_video'] * 1000:+.0f} ms per video.\n"
    )
    return head + table + tail
