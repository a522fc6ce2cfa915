"""Scoring on every GPU and core of a machine (worker processes), or of a Ray cluster (actors).

    from affbatch.scale import open_workers
    with open_workers(ScoreOptions(model="prior"), workers=4) as pool:
        for result in pool.score_many(videos):      # in the order they finish
            ...

Every worker holds its own :class:`~affbatch.pipeline.Scorer`, built once; videos are handed
out longest first; results come back to the caller, which is the one writer (``affbatch.run``
commits each to the run store as it arrives). ``order``: the longest-first rule; ``worker``:
what a worker process or actor runs; ``local``: the process pool; ``ray_actors``: the same on
Ray (imported only with ``ray=``).

Worker processes are started with ``spawn``: a script that uses them must guard its entry
point with ``if __name__ == "__main__":``, or every worker runs the script again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from affbatch.errors import UsageError
from affbatch.pipeline import ScoreOptions


def visible_gpus() -> int:
    """CUDA devices torch sees (0 without torch's CUDA or a GPU)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers(device: str) -> int:
    """One per visible GPU for ``auto``/``cuda``; 1 on the CPU, where one process already uses
    every core and measured no slower than one single-threaded process per core (README, Scale)."""
    if device in ("auto", "cuda"):
        return max(1, visible_gpus())
    return 1


def worker_devices(device: str, workers: int) -> list[str] | None:
    """The device of each worker: the visible GPUs in turn for ``auto``/``cuda`` on a GPU
    machine; else every worker on ``device`` (None: as the options say)."""
    if device not in ("auto", "cuda"):
        return None
    gpus = visible_gpus()
    return [f"cuda:{i % gpus}" for i in range(workers)] if gpus else None


@contextlib.contextmanager
def open_workers(options: ScoreOptions, workers: int | None = None, ray: str | None = None) -> Iterator:
    """Started workers (processes, or Ray actors with ``ray="auto"`` or an address), stopped on
    leaving. ``workers``: processes here (default :func:`default_workers`); with Ray, actors
    per CPU-only node (default 1 per node; on GPUs always one actor per GPU)."""
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    if ray is not None:
        from affbatch.scale.ray_actors import RayPool

        pool = RayPool(options, ray, workers)
    else:
        from affbatch.scale.local import WorkerPool

        n = workers or default_workers(options.device)
        pool = WorkerPool(options, n, worker_devices(options.device, n))
    with pool:
        yield pool
