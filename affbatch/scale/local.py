"""Worker processes on one machine: each holds its own Scorer; the parent hands out videos,
longest first, one at a time to whichever worker is free, and yields results as they arrive.

Processes are started with ``spawn`` (not ``fork``): a forked child would inherit the parent's
threads and CUDA state half-initialised, and spawn behaves the same on Linux, macOS and
Windows. A worker that dies (segfault in a decoder, the OOM killer, SIGKILL) costs only its
video in flight: that video is tried once more on a fresh worker, then recorded as failed with
the reason; the run goes on. Closing the pool (normally, on Ctrl-C, or on an error) stops every
worker; a worker whose parent is killed ends itself (``worker.serve``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from affbatch.errors import AffbatchError
from affbatch.pipeline import ScoreOptions, VideoResult, failed_result
from affbatch.scale.order import longest_first
from affbatch.scale.worker import PoolFace, WorkerSpec, on_device, serve
from affbatch.video.inputs import InputVideo

#: Attempts of one video: the first, and one retry on a fresh worker.
ATTEMPTS = 2

#: Seconds a stopped worker gets to exit before it is killed.
STOP_GRACE_S = 5.0


class WorkerDied(AffbatchError):
    """The reason recorded for a video whose worker died on every attempt."""


@dataclass
class _Worker:
    slot: int
    process: multiprocessing.process.BaseProcess
    conn: object
    ready: bool = False
    video: InputVideo | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def pid(self) -> int:
        return self.process.pid


def cpu_shares(workers: int, cpus: list[int] | None = None) -> list[tuple[int, ...]]:
    """The CPUs each of ``workers`` is pinned to: contiguous, equal shares of the CPUs this
    process may use (one CPU each, round robin, when there are more workers than CPUs)."""
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    n = len(cpus)
    if workers >= n:
        return [(cpus[i % n],) for i in range(workers)]
    return [tuple(cpus[i * n // workers : (i + 1) * n // workers]) for i in range(workers)]


def describe_exit(code: int | None) -> str:
    """``-9`` -> ``killed by SIGKILL``; ``3`` -> ``exit status 3``."""
    if code is None:
        return "pipe closed"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class WorkerPool(PoolFace):
    """``workers`` processes scoring with ``options``; on CUDA, worker i on ``devices[i]``.

    Use as a context manager: entering starts the workers and waits until each has loaded its
    models (:class:`UsageError` if they cannot, as a Scorer would raise); leaving stops them.
    """

    def __init__(self, options: ScoreOptions, workers: int, devices: list[str] | None = None, pin: bool = True) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.options = options
        self.workers = workers
        self.devices = devices
        self.shares = cpu_shares(workers) if pin and workers > 1 else [None] * workers
        self._context = multiprocessing.get_context("spawn")
        self._pool: dict[int, _Worker] = {}
        self.info: dict = {}
        self.restarts = 0  # fresh workers started in place of dead ones
        self.idle_deaths = 0

    # -- the Scorer's face: what the run store needs (settings, metadata: PoolFace) ---------
    @property
    def description(self) -> str:
        return f"{self.info['description']} ({self.workers} worker processes)"

    def __enter__(self) -> WorkerPool:
        try:
            for slot in range(self.workers):
                self._spawn(slot)
            for worker in list(self._pool.values()):
                self._await_ready(worker)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self, slot: int) -> _Worker:
        device = self.devices[slot % len(self.devices)] if self.devices else None
        spec = WorkerSpec(on_device(self.options, device), self.shares[slot])
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=serve, args=(child_end, spec, os.getpid()), name=f"affbatch-worker-{slot}", daemon=True
        )
        process.start()
        child_end.close()  # the parent's copy: EOF on parent_end once the child is gone
        worker = _Worker(slot, process, parent_end)
        self._pool[slot] = worker
        return worker

    def _await_ready(self, worker: _Worker) -> None:
        """The worker's first message: ready, or why it cannot start."""
        try:
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join()
            raise AffbatchError(
                f"a worker process could not start ({describe_exit(worker.process.exitcode)})"
            ) from None
        if kind == "error":
            raise payload
        if self.info and payload["settings"] != self.info["settings"]:  # same options: a bug
            raise RuntimeError(f"workers disagree on settings: {payload['settings']} vs {self.info['settings']}")
        self.info = self.info or payload
        worker.ready = True

    def close(self) -> None:
        """Stop every worker: close its pipe (a waiting worker exits), then SIGTERM, then SIGKILL."""
        workers, self._pool = list(self._pool.values()), {}
        for worker in workers:
            worker.conn.close()
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()

    # -- the work --------------------------------------------------------------------------
    def score_many(self, videos: list[InputVideo], progress=None) -> Iterator[VideoResult]:
        """One result per video, in the order they finish. ``progress``: an
        ``affbatch.run.Progress`` (``frames_done``, ``video_assigned``, ``note``)."""
        queue = deque(longest_first(videos))
        attempts: dict[str, int] = {}
        while queue or any(w.video is not None for w in self._pool.values()):
            for worker in list(self._pool.values()):
                if worker.ready and worker.video is None and queue:
                    self._send(worker, queue.popleft(), attempts, progress)
            if not self._pool:  # every worker died and none could be replaced: a bug
                raise RuntimeError("no worker left")
            waitables = {}
            for worker in self._pool.values():
                waitables[worker.conn] = worker
                waitables[worker.process.sentinel] = worker
            for obj in wait(list(waitables)):
                worker = waitables[obj]
                if self._pool.get(worker.slot) is not worker:
                    continue  # handled already in this round (its pipe and sentinel both fired)
                yield from self._receive(worker, queue, attempts, progress)

    def _send(self, worker: _Worker, video: InputVideo, attempts: dict[str, int], progress) -> None:
        attempts[video.name] = attempts.get(video.name, 0) + 1
        worker.video = video
        worker.started = time.perf_counter()
        with contextlib.suppress(OSError):  # it died: its sentinel says so next
            worker.conn.send(("score", video))
        if progress is not None:
            progress.video_assigned(video.name, worker.pid)

    def _receive(self, worker: _Worker, queue: deque, attempts: dict[str, int], progress) -> Iterator[VideoResult]:
        """Every message the worker has sent; then, if it is gone, what its death costs."""
        while True:
            try:
                if not worker.conn.poll():
                    break
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                break
            if kind == "frames":
                if progress is not None:
                    progress.frames_done(payload, 0.0)
            elif kind == "result":
                worker.video = None
                yield payload
            elif kind == "ready":
                self.info = self.info or payload
                worker.ready = True
            elif kind == "error":  # a fresh worker that cannot start where the first ones could
                raise payload
        if worker.process.is_alive():
            return  # still working; or its pipe closed and its sentinel will fire next
        yield from self._died(worker, queue, attempts, progress)

    def _died(self, worker: _Worker, queue: deque, attempts: dict[str, int], progress) -> Iterator[VideoResult]:
        worker.process.join()
        worker.conn.close()
        del self._pool[worker.slot]
        why = describe_exit(worker.process.exitcode)
        video = worker.video
        if video is not None:
            if attempts[video.name] < ATTEMPTS:
                queue.appendleft(video)  # next, on whichever worker is free first
                message = f"worker {worker.pid} died ({why}) while scoring {video.name}: scoring it again"
            else:
                error = WorkerDied(f"its worker died on each of {ATTEMPTS} attempts (last: {why})")
                yield failed_result(video, error, None, worker.started)
                message = f"worker {worker.pid} died ({why}) while scoring {video.name} again: recorded as failed"
            if progress is not None:
                progress.note(message)
        else:
            # Dying without a video (while loading its models, or between videos) costs
            # nothing, but a worker that cannot stay up must not be restarted forever.
            self.idle_deaths += 1
            if self.idle_deaths > self.workers:
                raise AffbatchError(f"worker processes keep dying while idle (last: {why}); giving up")
            if progress is not None:
                progress.note(f"worker {worker.pid} died ({why}) between videos")
        if queue:
            self.restarts += 1
            self._spawn(worker.slot)  # its "ready" arrives through the loop
