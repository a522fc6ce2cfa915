"""``affbatch score``: videos in, traces and a manifest out.

Decoding runs in a background thread, one batch ahead of the analysis (and across video
boundaries), so the two overlap. Each video is committed to the run store as soon as it is
done; OUT is assembled when every input has a result. A video that fails is recorded with its
reason and the run goes on.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import affbatch
from affbatch.analysis import Analyzer
from affbatch.decoders import get_decoder
from affbatch.decoders.base import Decoder, FrameBatch
from affbatch.devices import check_device, check_runtime
from affbatch.errors import AffbatchError, UsageError, VideoError
from affbatch.framerate import PAPER_FPS, fps_filter_slots
from affbatch.inputs import InputVideo, collect_videos
from affbatch.probe import VideoInfo, probe
from affbatch.progress import Progress
from affbatch.runstore import Fingerprint, ManifestRow, RunStore, fingerprint
from affbatch.traces import frames_table, manifest_path

log = logging.getLogger(__name__)

FPS_CHOICES = ("30", "native")

#: A timestamp jump that would make more output frames than this is a broken file, not a
#: pause: 24 hours at 30 fps.
MAX_OUTPUT_FRAMES = 24 * 3600 * int(PAPER_FPS)


@dataclass
class ScoreOptions:
    """Options of ``affbatch score``; the CLI builds one of these and calls ``score``."""

    out: Path
    fps: str = "30"
    model: str = "auto"
    device: str = "auto"
    runtime: str = "auto"
    decoder: str = "auto"
    detector: str = "auto"
    batch_size: int = 64
    resume: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.fps not in FPS_CHOICES:
            raise UsageError(f"--fps {self.fps!r}: choose 30 or native")
        check_device(self.device)
        check_runtime(self.runtime)
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.out.is_dir():
            raise UsageError(f"--out {self.out}: is a folder; give a file name such as traces.arrow")


@dataclass
class ScoreSummary:
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


def select_frames(info: VideoInfo, fps: str) -> tuple[np.ndarray, np.ndarray]:
    """Source frame and time (s) of every output frame: ffmpeg's ``fps=30`` or every frame."""
    if fps == "native":
        return np.arange(info.frames, dtype=np.int64), info.times_s()
    slots = fps_filter_slots(info.pts + info.offset, info.time_base, info.eof_pts, PAPER_FPS)
    if len(slots) > MAX_OUTPUT_FRAMES:
        raise VideoError(
            f"{info.path}: timestamps span {len(slots) / float(PAPER_FPS) / 3600:.0f} h for "
            f"{info.frames} frames: broken timestamps"
        )
    return slots, np.arange(len(slots), dtype=np.float64) / float(PAPER_FPS)


def resolve_analyzer(options: ScoreOptions) -> Analyzer:
    """The face and affect models for ``--model``/``--detector``/``--runtime``/``--device``."""
    from affbatch.zoo import resolve_analyzer as resolve

    return resolve(options.model, options.detector, options.runtime, options.device)


def score(paths: list[str | os.PathLike], options: ScoreOptions, progress: Progress | None = None) -> ScoreSummary:
    """Score every video under ``paths`` into ``options.out``. See the module docstring."""
    progress = progress or Progress()
    t0 = time.perf_counter()
    videos = collect_videos(paths)
    if not videos:
        raise UsageError(f"no video files found in {', '.join(map(str, paths))}")
    decoder = get_decoder(options.decoder)
    analyzer = resolve_analyzer(options)
    ident = analyzer.identity
    progress.note(f"model: {ident.description}")
    settings = {
        "fps": options.fps,
        "model": ident.model,
        "model_sha256": ident.model_sha256,
        "detector": ident.detector,
        "detector_sha256": ident.detector_sha256,
    }
    metadata = {
        "affbatch_version": affbatch.__version__,
        **settings,
        "runtime": ident.runtime,
        "device": ident.device,
        "decoder": decoder.name,
    }
    store = RunStore(options.out, settings, options.resume)
    try:
        sizes = {v.name: _size(v.path) for v in videos}
        progress.start(len(videos), sum(sizes.values()))
        todo: list[InputVideo] = []
        reused = 0
        for video in videos:
            hit = store.reusable(video) if options.resume else None
            if hit is None:
                todo.append(video)
                continue
            reused += 1
            progress.video_started(video.name, sizes[video.name])
            progress.video_done(video.name, "reused", hit[0].frames or 0, 0.0, None)

        for video, outcome in _run(todo, decoder, analyzer, options, progress, sizes):
            row, table, print_ = outcome
            store.commit(video, row, table, print_)
            progress.video_done(video.name, row.status, row.frames or 0, row.seconds or 0.0, row.error)

        rows = store.assemble(videos, metadata)
    finally:
        store.close()
        progress.close()
    return ScoreSummary(
        out=options.out,
        manifest=manifest_path(options.out),
        rows=rows,
        reused=reused,
        seconds=time.perf_counter() - t0,
        metadata=metadata,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- the pipeline ------------------------------------------------------------------------------

# Events from the decoding thread, in order: for each video, ("start", video, (info, slots,
# times, wanted count, fingerprint, t0)), then ("batch", video, FrameBatch) any number of times,
# then ("end", video, None); or ("error", video, (VideoError, fingerprint or None, t0)) at any
# point. t0: when the thread began the video (perf_counter), so probing counts in "seconds".


def _produce(
    videos: list[InputVideo], decoder: Decoder, options: ScoreOptions
) -> Iterator[tuple[str, InputVideo, object]]:
    for video in videos:
        print_: Fingerprint | None = None
        t0 = time.perf_counter()
        try:
            info = probe(video.path)
            print_ = fingerprint(video.path)
            slots, times = select_frames(info, options.fps)
            wanted = np.unique(slots)
            yield "start", video, (info, slots, times, len(wanted), print_, t0)
            for batch in decoder.frames(info, wanted, options.batch_size):
                yield "batch", video, batch
            yield "end", video, None
        except Exception as exc:  # one video's failure, whatever it is, must not end the run
            yield "error", video, (as_video_error(video, exc), print_, t0)


def as_video_error(video: InputVideo, exc: Exception) -> VideoError:
    """The one-line reason recorded for a video that could not be scored."""
    if isinstance(exc, VideoError):
        return exc
    if isinstance(exc, FileNotFoundError):  # the file vanished between steps
        return VideoError(f"{video.path}: file not found")
    if isinstance(exc, PermissionError):
        return VideoError(f"{video.path}: permission denied")
    if isinstance(exc, OSError):  # the file broke between steps
        return VideoError(f"{video.path}: cannot read: {exc.strerror or exc}")
    # A decoder bug on a strange file: say so, and keep the traceback for --debug.
    log.debug("unexpected error on %s", video.path, exc_info=exc)
    return VideoError(f"{video.path}: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)")


@dataclass
class _InFlight:
    """The video whose batches the analysis is receiving."""

    video: InputVideo
    info: VideoInfo
    slots: np.ndarray
    times: np.ndarray
    wanted: int
    print_: Fingerprint
    t0: float
    decoded: int = 0


def _run(videos, decoder, analyzer: Analyzer, options: ScoreOptions, progress: Progress, sizes):
    """Yield (video, (row, table or None, fingerprint)) for each video, in order."""
    current: _InFlight | None = None
    for kind, video, payload in prefetch(_produce(videos, decoder, options), depth=2):
        if kind == "start":
            info, slots, times, wanted, print_, t0 = payload
            current = _InFlight(video, info, slots, times, wanted, print_, t0)
            progress.video_started(video.name, sizes.get(video.name, 0))
            analyzer.start(info, slots)
        elif kind == "batch":
            batch: FrameBatch = payload
            analyzer.add(batch)
            current.decoded += len(batch)
            progress.frames_done(len(batch), current.decoded / max(1, current.wanted))
        elif kind == "end":
            try:
                faces = analyzer.finish(current.slots)
                table = frames_table(video.name, current.slots, current.times, faces)
            except AffbatchError as exc:
                yield video, _failed(video, exc, None, current.t0)
                current = None
                continue
            info = current.info
            row = ManifestRow(
                video=video.name,
                status="ok",
                frames=len(current.slots),
                native_fps=round(info.native_fps, 6),
                duration_s=round(info.duration_s, 6),
                width=info.width,
                height=info.height,
                codec=info.codec,
                seconds=round(time.perf_counter() - current.t0, 3),
            )
            yield video, (row, table, current.print_)
            current = None
        else:  # "error"
            exc, print_, t0 = payload
            if current is None or current.video is not video:
                progress.video_started(video.name, sizes.get(video.name, 0))
            yield video, _failed(video, exc, print_, t0)
            current = None


def _failed(video: InputVideo, exc: Exception, print_, t_start: float):
    message = str(exc)
    # Reasons name the file already; the manifest's video column does too, so keep the reason.
    prefix = f"{video.path}: "
    reason = message[len(prefix) :] if message.startswith(prefix) else message
    row = ManifestRow(
        video=video.name,
        status="failed",
        error=reason.splitlines()[0] if reason else type(exc).__name__,
        seconds=round(time.perf_counter() - t_start, 3),
    )
    return row, None, print_


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead of the consumer.

    PyAV and NumPy release the GIL while decoding and converting, so this overlaps decoding
    with whatever the consumer does. An exception in the thread is re-raised in the consumer;
    a consumer that stops early stops the thread.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def worker() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(("done", done))
        except BaseException as exc:  # handed to the consumer
            items.put(("raise", exc))

    thread = threading.Thread(target=worker, name="affbatch-decode", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = items.get()
            if kind == "item":
                yield item
            elif kind == "done":
                return
            else:
                raise item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
