"""One worker: a :class:`~affbatch.pipeline.Scorer`, built once, scoring the videos it is sent.

The same object serves a local worker process (:func:`serve`, over a pipe to the parent) and a
Ray actor (``affbatch.scale.ray_actors``). It never writes to the run store: each video's
:class:`~affbatch.pipeline.VideoResult` (manifest row, Arrow table, fingerprint) goes back to
the parent, the one writer.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace

from affbatch.errors import AffbatchError
from affbatch.pipeline import ScoreOptions, Scorer, VideoResult
from affbatch.video.inputs import InputVideo

#: Seconds between two progress messages of a worker: the parent's bar needs no more.
PROGRESS_EVERY_S = 0.5

#: How often a worker looks whether its parent is still there.
PARENT_CHECK_S = 0.2


class PoolFace:
    """What the run store reads from a pool of workers, as from a Scorer: the settings and
    metadata the workers reported when they started (``self.info``)."""

    info: dict

    @property
    def settings(self) -> dict:
        return self.info["settings"]

    @property
    def metadata(self) -> dict:
        return self.info["metadata"]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is built from. ``cores``: the CPUs it is pinned to (None: not pinned);
    ``threads``: its compute threads (None: as many as the CPUs it may use)."""

    options: ScoreOptions
    cores: tuple[int, ...] | None = None
    threads: int | None = None


def limit_cpus(cores: tuple[int, ...] | None, threads: int | None) -> None:
    """Confine this process before torch, ONNX Runtime or FFmpeg start their thread pools.

    Pinning keeps two workers on two cores from trading caches and time slices; FFmpeg's
    automatic thread count and libgomp's (torch) follow the pinned set. ONNX Runtime reads
    ``AFFBATCH_THREADS`` (engines.cpuinfo.threads: ONNX Runtime, OpenVINO), OpenMP ``OMP_NUM_THREADS``.
    """
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    if threads is None and cores:
        threads = len(cores)
    if threads:
        os.environ["AFFBATCH_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


class WorkerScorer:
    """A Scorer and the settings the parent checks (every worker must score alike)."""

    def __init__(self, spec: WorkerSpec) -> None:
        limit_cpus(spec.cores, spec.threads)
        self.scorer = Scorer(spec.options)
        if spec.threads and "torch" in sys.modules:  # imported before OMP_NUM_THREADS was read
            import torch

            torch.set_num_threads(spec.threads)

    def describe(self) -> dict:
        s = self.scorer
        return {"settings": s.settings, "metadata": s.metadata, "description": s.description, "pid": os.getpid()}

    def score(self, video: InputVideo, listener=None) -> VideoResult:
        return next(self.scorer.score_many([video], listener=listener))


class _Forward:
    """The Scorer's progress, sent to the parent at most every PROGRESS_EVERY_S."""

    def __init__(self, send) -> None:
        self.send = send
        self.frames = 0
        self.last = time.monotonic()

    def video_started(self, name: str, size: int) -> None:
        pass

    def frames_done(self, frames: int, fraction: float) -> None:
        self.frames += frames
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.flush()
            self.last = now

    def flush(self) -> None:
        if self.frames:
            self.send(("frames", self.frames))
            self.frames = 0


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent was killed (SIGKILL: no chance to stop it) ends itself."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="affbatch-parent-watch", daemon=True).start()


def serve(conn, spec: WorkerSpec, parent: int) -> None:
    """A local worker process's main: build, say ready (or why not), then score until told to
    stop or the pipe closes. Messages to the parent: ``("ready", describe())``, ``("error",
    AffbatchError)``, ``("frames", n)``, ``("result", VideoResult)``."""
    # Ctrl-C reaches every process of the terminal's group: the parent alone decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)
    try:
        worker = WorkerScorer(spec)
    except AffbatchError as exc:  # its class says how the CLI exits (a UsageError: status 2)
        conn.send(("error", exc))
        return
    except Exception as exc:  # a bug, or a library that failed to load: one line for the parent
        conn.send(("error", AffbatchError(f"a worker could not start: {type(exc).__name__}: {exc}")))
        return
    conn.send(("ready", worker.describe()))
    forward = _Forward(conn.send)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "score":
            return
        result = worker.score(message[1], listener=forward)
        forward.flush()
        conn.send(("result", result))


def on_device(options: ScoreOptions, device: str | None) -> ScoreOptions:
    """``options`` with the worker's own device (one GPU each), or as they are."""
    return options if device is None else replace(options, device=device)
