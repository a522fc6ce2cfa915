"""The workers as Ray actors: one per GPU of the cluster (``num_gpus=1``), or on CPU-only nodes
``workers`` per node (default 1) sharing the node's CPUs; each holds its Scorer, built once.

Fault tolerance is Ray's: an actor that dies is restarted (``max_restarts``) and the task it was
running is retried once on the restarted actor (``max_task_retries``), so a video costs at most
two attempts; after that ``ray.get`` raises and the video is recorded as failed with Ray's
reason. A node that dies takes its actors with it; they are restarted on another node with room
(the node affinity is soft) and their videos retried there.

Each video's result (its Arrow table and manifest row) returns to the driver, which commits it
to the run store, as with local workers. Why not let actors write to a shared ``--out``: OUT is
one Arrow file assembled by one process at the end, so every byte of traces passes through one
machine anyway, and the traces are small (about 60 bytes per frame: some 6.5 MB per hour of
30 fps video) next to the video each was computed from. Returning them keeps one writer, the
store's lock and atomic commits unchanged, and "every video exactly once" needs no
coordination between actors: a retried task's result reaches the driver once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from affbatch.errors import AffbatchError, UsageError
from affbatch.pipeline import ScoreOptions, VideoResult, failed_result
from affbatch.scale.order import longest_first
from affbatch.scale.worker import PoolFace, WorkerScorer, WorkerSpec
from affbatch.video.inputs import InputVideo

#: A video is tried on at most this many actor lives: Ray retries the task once.
ATTEMPTS = 2


class VideoActor:
    """What each actor holds: a WorkerScorer; ``score`` returns (result, the actor's pid)."""

    def __init__(self, spec: WorkerSpec) -> None:
        # An error here is kept for the driver, not raised: Ray would report a constructor's
        # exception as "the actor died" without the exception itself.
        self.worker = self.error = None
        try:
            self.worker = WorkerScorer(spec)
        except AffbatchError as exc:
            self.error = exc
        except Exception as exc:
            self.error = AffbatchError(f"--ray: an actor could not start: {type(exc).__name__}: {exc}")

    def describe(self) -> dict:
        return {"error": self.error} if self.error is not None else self.worker.describe()

    def score(self, video: InputVideo) -> tuple[VideoResult, int]:
        return self.worker.score(video), os.getpid()


class ActorDied(AffbatchError):
    """The reason recorded for a video whose actor died on every attempt."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray: Ray is not installed here: pip install 'affbatch[ray]'") from None
    return ray


def connect(address: str):
    """``ray.init`` on an existing cluster (``auto``: RAY_ADDRESS, else the one this machine
    runs), quietly; a :class:`UsageError` saying how to start one when there is none."""
    ray = import_ray()
    if address != "auto":
        reachable(address)
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"--ray {address}: cannot connect to a Ray cluster ({first}); start one with `ray start --head`"
        ) from None
    return ray


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """A plain TCP connect to the cluster's GCS port first: ``ray.init`` retries an address
    where nothing listens for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--ray {address}: give auto or HOST:PORT (the head's address, port 6379 by default)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(
            f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with `ray start --head`"
        ) from None


def cluster(ray) -> list[dict]:
    """The cluster's live nodes: id, address, CPUs, GPUs, memory."""
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        nodes.append(
            {
                "node_id": node["NodeID"],
                "address": node.get("NodeManagerAddress"),
                "cpus": int(res.get("CPU", 0)),
                "gpus": int(res.get("GPU", 0)),
                "memory_gb": round(res.get("memory", 0) / 1e9, 1),
            }
        )
    return nodes


def describe_cluster(address: str) -> dict:
    """For ``affbatch info --ray``: connects, reads the nodes, disconnects."""
    ray = connect(address)
    try:
        nodes = cluster(ray)
        return {
            "address": address,
            "ray": ray.__version__,
            "nodes": nodes,
            "cpus": sum(n["cpus"] for n in nodes),
            "gpus": sum(n["gpus"] for n in nodes),
        }
    finally:
        ray.shutdown()


@dataclass
class _Actor:
    handle: object
    label: str  # "node 127.0.0.1 GPU 0", for messages
    pid: int = 0
    video: InputVideo | None = None
    ref: object = None
    started: float = 0.0


def placements(nodes: list[dict], device: str, per_node: int | None) -> list[tuple[dict, dict]]:
    """(node, actor options) for each actor: one per GPU (unless ``device`` is cpu), else
    ``per_node`` per node (default 1) sharing its CPUs."""
    out = []
    use_gpus = device != "cpu" and any(n["gpus"] for n in nodes)
    for node in nodes:
        if use_gpus:
            for _ in range(node["gpus"]):
                cpus = max(1, node["cpus"] // node["gpus"]) if node["cpus"] else 0
                out.append((node, {"num_gpus": 1, "num_cpus": cpus}))
        elif node["cpus"]:
            n = per_node or 1
            out += [(node, {"num_cpus": max(1, node["cpus"] // n)})] * n
    return out


class RayPool(PoolFace):
    """Actors on the Ray cluster at ``address``; used as ``affbatch.scale.local.WorkerPool``."""

    def __init__(self, options: ScoreOptions, address: str, per_node: int | None = None) -> None:
        self.options = options
        self.address = address
        self.per_node = per_node
        self.actors: list[_Actor] = []
        self.info: dict = {}
        self.ray = None

    @property
    def description(self) -> str:
        return f"{self.info['description']} ({len(self.actors)} Ray actors on {self.nodes} nodes)"

    def __enter__(self) -> RayPool:
        ray = self.ray = connect(self.address)
        try:
            self._start(ray)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, ray) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        import affbatch

        nodes = cluster(ray)
        plan = placements(nodes, self.options.device, self.per_node)
        if not plan:
            raise UsageError(f"--ray {self.address}: the cluster has no CPU or GPU to run on")
        self.nodes = len({node["node_id"] for node, _ in plan})
        remote = ray.remote(VideoActor)
        for i, (node, resources) in enumerate(plan):
            gpu = "num_gpus" in resources
            # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU: it is cuda:0 inside.
            options = replace(self.options, device="cuda") if gpu else self.options
            spec = WorkerSpec(options, None, resources["num_cpus"] or None)
            handle = remote.options(
                **resources,
                max_restarts=-1,  # a dead actor always comes back; its video is retried once
                max_task_retries=ATTEMPTS - 1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["node_id"], soft=True),
            ).remote(spec)
            label = f"actor {i} ({'GPU' if gpu else str(resources['num_cpus']) + ' CPUs'}, node {node['address']})"
            self.actors.append(_Actor(handle, label))
        described = [actor.handle.describe.remote() for actor in self.actors]
        for actor, ref in zip(self.actors, described, strict=True):
            try:
                info = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                raise _actor_error(exc) from None
            if "error" in info:
                raise info["error"]
            actor.pid = info["pid"]
            if info["metadata"]["affbatch_version"] != affbatch.__version__:
                raise UsageError(
                    f"--ray: {actor.label} runs affbatch {info['metadata']['affbatch_version']}, this driver "
                    f"{affbatch.__version__}: install the same version on every node"
                )
            if self.info and info["settings"] != self.info["settings"]:
                raise UsageError(f"--ray: {actor.label} would score with other settings: {info['settings']}")
            self.info = self.info or info

    def close(self) -> None:
        """Kill our actors (Ray would when the driver goes; sooner is kinder to the cluster)
        and disconnect; the cluster itself runs on."""
        if self.ray is None:
            return
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor.handle, no_restart=True)
        self.actors = []
        with contextlib.suppress(Exception):
            self.ray.shutdown()
        self.ray = None

    def score_many(self, videos: list[InputVideo], progress=None) -> Iterator[VideoResult]:
        """One result per video, in the order they finish; one video in flight per actor."""
        ray = self.ray
        queue = deque(longest_first(videos))
        running: dict[object, _Actor] = {}
        while queue or running:
            for actor in self.actors:
                if actor.video is None and queue:
                    video = queue.popleft()
                    actor.video = video
                    actor.started = time.perf_counter()
                    # Absolute: an actor's working folder is not the driver's.
                    actor.ref = actor.handle.score.remote(InputVideo(Path(os.path.abspath(video.path)), video.name))
                    running[actor.ref] = actor
                    if progress is not None:
                        progress.video_assigned(video.name, actor.pid)
            done, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            video, actor.video = actor.video, None
            try:
                result, pid = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                if progress is not None:
                    progress.note(f"{actor.label} died while scoring {video.name} again: recorded as failed")
                error = ActorDied(f"its Ray actor died on each of {ATTEMPTS} attempts ({_first_line(exc)})")
                yield failed_result(video, error, None, actor.started)
                continue
            if pid != actor.pid and progress is not None:
                progress.note(
                    f"{actor.label}: process {actor.pid} died; Ray restarted it (process {pid}), "
                    f"which scored {video.name}"
                )
            actor.pid = pid
            result.video = video  # the driver's spelling of the path
            if progress is not None and result.row.frames:
                progress.frames_done(result.row.frames, 0.0)
            yield result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _actor_error(exc: BaseException) -> AffbatchError:
    """An actor that could not even be created (affbatch missing on its node, say)."""
    hint = " (is this affbatch installed on every node?)" if "ModuleNotFoundError" in str(exc) else ""
    return AffbatchError(f"--ray: an actor could not start{hint}: {_first_line(exc)}")
