"""``affbatch score``: a :class:`~affbatch.pipeline.Scorer` writing into the run store.

Each video is committed to the run store (``OUT.parts/``) as soon as its result arrives; OUT
and its manifest are assembled when every input has a result. With ``resume``, a video whose
stored result matches its content and the settings is reused, not scored again.

With ``workers`` > 1 or ``ray``, the videos are scored by worker processes or Ray actors
(``affbatch.scale``); their results come back here, and this process alone writes the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from affbatch import destination
from affbatch.errors import UsageError
from affbatch.files import file_size
from affbatch.output.runstore import RunStore
from affbatch.output.traces import ManifestRow, manifest_path
from affbatch.pipeline import ScoreOptions, Scorer, VideoResult
from affbatch.video.inputs import InputVideo, collect_videos


class Progress:
    """Silent progress of a run; ``affbatch.cli.progress`` draws it. The Scorer calls
    ``video_started`` and ``frames_done``; the run the rest."""

    def start(self, videos: int, total_bytes: int) -> None: ...
    def video_started(self, name: str, size: int) -> None: ...
    def frames_done(self, frames: int, fraction: float) -> None: ...
    def video_done(self, name: str, status: str, frames: int, seconds: float, error: str | None) -> None: ...
    def video_assigned(self, name: str, worker: int) -> None:
        """With workers: ``name`` was sent to the worker whose process id is ``worker``."""

    def note(self, message: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunSummary:
    out: Path
    manifest: Path
    rows: list[ManifestRow]
    reused: int
    seconds: float
    metadata: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[ManifestRow]:
        return [r for r in self.rows if r.status != "ok"]

    @property
    def frames(self) -> int:
        return sum(r.frames or 0 for r in self.rows if r.status == "ok")

    def to_json(self) -> dict:
        return {
            "out": str(self.out),
            "manifest": str(self.manifest),
            "videos": len(self.rows),
            "ok": len(self.rows) - len(self.failed),
            "failed": [{"video": r.video, "error": r.error} for r in self.failed],
            "reused": self.reused,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "frames_per_s": round(self.frames / self.seconds, 1) if self.seconds > 0 else None,
            "model": self.metadata.get("model"),
            "fps": self.metadata.get("fps"),
        }


def score_run(
    paths: list[str | os.PathLike],
    out: str | os.PathLike,
    options: ScoreOptions | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    scorer: Scorer | None = None,
    workers: int | None = None,
    ray: str | None = None,
) -> RunSummary:
    """Score every video under ``paths`` into ``out`` and its manifest (see the module docstring).

    ``scorer``: one already loaded (its options are used); else one is made from ``options``.
    ``workers``: worker processes (None: ``affbatch.scale.default_workers``; 1: this process
    scores); ``ray``: ``auto`` or a Ray cluster's address, whose actors score.
    """
    progress = progress or Progress()
    t0 = time.perf_counter()
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name such as traces.arrow")
    videos = collect_videos(paths)
    if not videos:
        raise UsageError(f"no video files found in {', '.join(map(str, paths))}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    options = scorer.options if scorer is not None else options or ScoreOptions()
    # Before the models load: OUT's folder made, writable, with room (else a usage error).
    destination.prepare(out, destination.rough_need(sum(file_size(v.path) for v in videos), len(videos)))
    if scorer is None and ray is None:
        from affbatch.scale import default_workers

        workers = workers or default_workers(options.device)
    if scorer is not None or (ray is None and workers == 1):
        scorer = scorer or Scorer(options)
        return _run(videos, out, scorer, resume, progress, t0)
    from affbatch.scale import open_workers

    with open_workers(options, workers, ray) as pool:
        return _run(videos, out, pool, resume, progress, t0)


def _run(videos: list[InputVideo], out: Path, scorer, resume: bool, progress: Progress, t0: float) -> RunSummary:
    """The run with a Scorer here, or a started pool of workers (``affbatch.scale``)."""
    progress.note(f"model: {scorer.description}")
    store = RunStore(out, scorer.settings, resume)
    try:
        progress.start(len(videos), sum(file_size(v.path) for v in videos))
        todo: list[InputVideo] = []
        reused = 0
        for video in videos:
            hit = store.reusable(video) if resume else None
            if hit is None:
                todo.append(video)
                continue
            reused += 1
            progress.video_started(video.name, file_size(video.path))
            progress.video_done(video.name, "reused", hit[0].frames or 0, 0.0, None)

        finished = reused
        if isinstance(scorer, Scorer):
            results = scorer.score_many(todo, listener=progress)
        else:
            results = _from_workers(scorer.score_many(todo, progress), todo, progress)
        for result in results:
            row = result.row
            if result.decoder_fallback:  # from a worker process too: the metadata is this process's
                scorer.metadata.setdefault("decoder_fallbacks", {})[result.name] = result.decoder_fallback
            with destination.writing(out, store.dir, finished):
                store.commit(result.video, row, result.table, result.fingerprint)
            finished += row.status == "ok"
            progress.video_done(result.name, row.status, row.frames or 0, row.seconds or 0.0, row.error)

        with destination.writing(out, store.dir, finished):
            rows = store.assemble(videos, scorer.metadata)
    finally:
        store.close()
        progress.close()
    return RunSummary(
        out=out,
        manifest=manifest_path(out),
        rows=rows,
        reused=reused,
        seconds=time.perf_counter() - t0,
        metadata=scorer.metadata,
    )


def _from_workers(results: Iterator[VideoResult], todo: list[InputVideo], progress: Progress) -> Iterator[VideoResult]:
    """Results of workers, each video once. Several videos are in flight at a time, so the
    progress hears of a video when its result arrives (the bar's bytes advance per video; its
    frame rate follows the frames the workers report as they go)."""
    waiting = {v.name for v in todo}
    for result in results:
        if result.name not in waiting:  # a bug: the pools give one result per video asked for
            raise RuntimeError(f"a second or unasked-for result for {result.name}")
        waiting.remove(result.name)
        progress.video_started(result.name, file_size(result.video.path))
        yield result
    if waiting:  # a bug, likewise
        raise RuntimeError(f"no result for {', '.join(sorted(waiting))}")
