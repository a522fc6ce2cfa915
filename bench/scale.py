"""``python -m bench scale``: frames/s of one machine with 1..N worker processes, beside one
process using every core (the ``--workers 1`` default on a CPU), and the per-video cost a worker
process adds; with ``--ray ADDRESS``, the same clips on that Ray cluster's actors beside them.

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
import statistics
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


class _Config:
    """One configuration, started: a name and a ``score(videos) -> results``."""

    def __init__(self, name: str, workers: int, start_s: float, score, close=None) -> None:
        self.name, self.workers, self.start_s, self.score, self.close = name, workers, start_s, score, close
        self.seconds: list[float] = []
        self.frames = 0

    def timed_pass(self, videos) -> None:
        t0 = time.perf_counter()
        self.frames = frames_of(self.score(videos))
        self.seconds.append(time.perf_counter() - t0)

    def result(self) -> dict:
        rates = [self.frames / s for s in self.seconds]
        return {
            "config": self.name,
            "workers": self.workers,
            "startup_s": self.start_s,
            "seconds": self.seconds,
            **rates_summary(rates, self.frames),
        }


def in_process(options: ScoreOptions) -> _Config:
    t0 = time.perf_counter()
    scorer = Scorer(options)
    return _Config("1 process, every core", 0, time.perf_counter() - t0, lambda vs: list(scorer.score_many(vs)))


def pooled(options: ScoreOptions, workers: int, pin: bool = True) -> _Config:
    t0 = time.perf_counter()
    pool = WorkerPool(options, workers, pin=pin).__enter__()
    share = pool.shares[0]
    threads = f"{len(share)} core(s) each" if share else "every core"
    return _Config(
        f"{workers} worker process(es), {threads}",
        workers,
        time.perf_counter() - t0,
        lambda vs: list(pool.score_many(vs)),
        pool.close,
    )


def on_ray(options: ScoreOptions, address: str, per_node: int) -> _Config:
    """``per_node`` actors per node of the Ray cluster at ``address`` (this machine's, for a
    figure beside the local ones)."""
    from affbatch.scale.ray_actors import RayPool

    t0 = time.perf_counter()
    pool = RayPool(options, address, per_node).__enter__()
    return _Config(
        f"Ray: {len(pool.actors)} actors on {pool.nodes} node(s)",
        len(pool.actors),
        time.perf_counter() - t0,
        lambda vs: list(pool.score_many(vs)),
        pool.close,
    )


def interleaved(configs: list[_Config], videos, warm, repeats: int) -> list[dict]:
    """Each configuration warmed up, then one pass of each in turn, ``repeats`` times: on a
    shared machine, load that comes and goes falls on every configuration alike."""
    for config in configs:
        frames_of(config.score([warm]))
    for _ in range(repeats):
        for config in configs:
            config.timed_pass(videos)
    return [c.result() for c in configs]


def run(
    workdir: Path, seconds: float, repeats: int, device: str, max_workers: int | None, ray: str | None = None
) -> dict:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    max_workers = max_workers or max(2, cpus)
    options = ScoreOptions(model="auto", device=device)
    videos, warm, short = clips(workdir, seconds)
    # Idle workers wait on a pipe and take no CPU: every configuration can be up at once.
    configs = [in_process(options)] + [pooled(options, k) for k in range(1, max_workers + 1)]
    try:
        if ray is not None:
            configs.append(on_ray(options, ray, max_workers))
        rows = interleaved(configs, videos, warm, repeats)
        for row in rows:
            print(line(row), flush=True)
        # Per-video cost: the same cores (all), one process against one worker process.
        configs.append(pooled(options, 1, pin=False))
        configs[0].seconds = []
        here, there = interleaved([configs[0], configs[-1]], short, warm, repeats)
    finally:
        for config in configs:
            if config.close is not None:
                config.close()
    n = len(short)
    t_here, t_there = (statistics.median(r["seconds"]) for r in (here, there))
    cost = {
        "videos": n,
        "frames_per_video": there["frames"] // n,
        "here_s_per_video": t_here / n,
        "worker_s_per_video": t_there / n,
        "overhead_s_per_video": (t_there - t_here) / n,
    }
    print(
        f"per video: {cost['worker_s_per_video']:.3f} s in a worker vs {cost['here_s_per_video']:.3f} s here "
        f"({cost['frames_per_video']} frames): {cost['overhead_s_per_video'] * 1000:+.0f} ms",
        flush=True,
    )
    base = rows[0]["fps_median"]
    for row in rows:
        row["vs_one_process"] = row["fps_median"] / base
        # Sizing: an hour of video is 108,000 output frames at 30 fps.
        row["video_hours_per_hour"] = row["fps_median"] / 30
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
