"""``affbatch score``: a :class:`~affbatch.pipeline.Scorer` writing into the run store.

Each video is committed to the run store (``OUT.parts/``) as soon as its result arrives; OUT
and its manifest are assembled when every input has a result. With ``resume``, a video whose
stored result matches its content and the settings is reused, not scored again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from affbatch import destination
from affbatch.errors import UsageError
from affbatch.files import file_size
from affbatch.output.runstore import RunStore
from affbatch.output.traces import ManifestRow, manifest_path
from affbatch.pipeline import ScoreOptions, Scorer
from affbatch.video.inputs import InputVideo, collect_videos


class Progress:
    """Silent progress of a run; ``affbatch.cli.progress`` draws it. The Scorer calls
    ``video_started`` and ``frames_done``; the run the rest."""

    def start(self, videos: int, total_bytes: int) -> None: ...
    def video_started(self, name: str, size: int) -> None: ...
    def frames_done(self, frames: int, fraction: float) -> None: ...
    def video_done(self, name: str, status: str, frames: int, seconds: float, error: str | None) -> None: ...
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
) -> RunSummary:
    """Score every video under ``paths`` into ``out`` and its manifest (see the module docstring).

    ``scorer``: one already loaded (its options are used); else one is made from ``options``.
    """
    progress = progress or Progress()
    t0 = time.perf_counter()
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name such as traces.arrow")
    videos = collect_videos(paths)
    if not videos:
        raise UsageError(f"no video files found in {', '.join(map(str, paths))}")
    # Before the models load: OUT's folder made, writable, with room (else a usage error).
    destination.prepare(out, destination.rough_need(sum(file_size(v.path) for v in videos), len(videos)))
    scorer = scorer or Scorer(options or ScoreOptions())
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
        for result in scorer.score_many(todo, listener=progress):
            row = result.row
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
