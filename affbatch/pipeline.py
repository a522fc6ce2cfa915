"""The Scorer: videos in, one :class:`VideoResult` per video out, in memory.

    scorer = Scorer(model="prior")                  # loads the models once
    for result in scorer.score_many(["videos/"]):   # files and folders, as `affbatch score` takes them
        print(result.name, result.status, result.error or result.table.num_rows)

Per video: probe (timestamps, by demuxing), the frames each output frame shows (``--fps``),
decoding of only those frames, then the analyzer (detector, tracker, crops, affect model) batch
by batch. Decoding runs in a background thread, one batch ahead of the analysis and across
video boundaries, so the two overlap. A video that cannot be scored is a result with
``status == "failed"`` and a one-line reason, never an exception: the next video goes on.

``affbatch score`` is a Scorer writing into the run store (``affbatch.run``); ``affbatch-train
prepare`` uses the crop hook (``on_crops``), the bench and the scale workers the same object.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

import affbatch
from affbatch.affect.base import Analyzer
from affbatch.errors import AffbatchError, UsageError, VideoError
from affbatch.files import Fingerprint, file_size, fingerprint
from affbatch.output.traces import ManifestRow, Status, frames_table
from affbatch.video.decoders import CHOICES as DECODER_CHOICES
from affbatch.video.decoders import get_decoder
from affbatch.video.decoders.base import FrameBatch
from affbatch.video.framerate import FPS_CHOICES, FpsMode, select_frames
from affbatch.video.inputs import InputVideo, collect_videos
from affbatch.video.probe import VideoInfo, probe

log = logging.getLogger(__name__)

#: ``on_crops(video, detection, crops)``: every face crop of a video, batch by batch, as the
#: affect model gets them: ``detection`` int64 (k,) numbers the video's detections from 0 in
#: decoding order; ``crops`` float32 (k, 3, 96, 96) RGB in [-1, 1]. A result's ``crop_index``
#: gives, for each traces row, the number of its crop (-1: no face).
CropHook = Callable[[InputVideo, np.ndarray, np.ndarray], None]


@dataclass
class ScoreOptions:
    """How videos are scored; defaults defined once, here. Checked on creation (a bad value is a
    :class:`UsageError` naming the option); nothing is loaded until a :class:`Scorer` is made.

    ``model``: ``auto``/``prior`` (the embedded expression prior), a checkpoint folder, ``none``
    (no models: frame rows only) or ``faces`` (detector and tracks only). ``device``: ``auto``,
    ``cpu``, ``cuda`` or ``cuda:N``. ``runtime``: ``auto``, ``onnxruntime``, ``torch`` or
    ``tensorrt``. ``precision``: ``auto``, ``fp32``, ``fp16`` or ``bf16``. ``batch_size``:
    frames per batch (results do not depend on it). ``align``: level the eyes in the crops.
    ``decoder``: ``auto``, ``pyav``, ``dali`` or ``nvcodec`` (``affbatch.video.decoders``; frames are
    decoded on, or moved once to, the models' device).
    """

    fps: FpsMode = "30"
    model: str = "auto"
    detector: str = "auto"
    device: str = "auto"
    runtime: str = "auto"
    precision: str = "auto"
    decoder: str = "auto"
    batch_size: int = 64
    align: bool = False

    def __post_init__(self) -> None:
        import engines  # light: the vocabulary only, no torch

        if self.fps not in FPS_CHOICES:
            raise UsageError(f"--fps {self.fps!r}: choose 30 or native")
        for check, value in (
            (engines.check_device, self.device),
            (engines.check_runtime, self.runtime),
            (engines.check_precision, self.precision),
        ):
            try:
                check(value)
            except engines.EngineError as exc:  # its message starts with the option's name
                raise UsageError(f"--{exc}") from None
        if self.decoder not in DECODER_CHOICES:
            raise UsageError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODER_CHOICES)}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size}: must be at least 1")


@dataclass
class VideoResult:
    """One video's outcome: its manifest row and, when it was scored, its traces.

    ``table``: the traces (``affbatch.output.traces.TRACE_SCHEMA``, without schema metadata;
    :attr:`Scorer.metadata` has it), None for a failed video. ``fingerprint``: the file's
    identity when it could be read (the run store's resume key). ``crop_index``: with a crop
    hook, int64 per traces row, the number of the row's crop (-1 where there is no face).
    """

    video: InputVideo
    row: ManifestRow
    table: pa.Table | None = None
    fingerprint: Fingerprint | None = None
    crop_index: np.ndarray | None = None
    #: ``--decoder auto`` on a GPU: why PyAV decoded this video instead of the GPU decoder.
    decoder_fallback: str | None = None

    @property
    def name(self) -> str:
        return self.video.name

    @property
    def status(self) -> Status:
        return self.row.status

    @property
    def error(self) -> str | None:
        return self.row.error

    @property
    def ok(self) -> bool:
        return self.row.status == "ok"


class Listener(Protocol):
    """What a Scorer tells while it works (``affbatch.run.Progress`` implements it)."""

    def video_started(self, name: str, size: int) -> None: ...
    def frames_done(self, frames: int, fraction: float) -> None: ...


class Scorer:
    """Loads the decoder and models once; scores videos one after another, in memory.

    ``Scorer(options)`` or ``Scorer(model=..., fps=..., ...)`` (the fields of
    :class:`ScoreOptions`). Raises :class:`UsageError` for options this machine cannot run
    (a CUDA device without a GPU, a runtime that is not installed, a checkpoint that does not
    load) and :class:`AffbatchError` for a model that does not compile.
    """

    def __init__(self, options: ScoreOptions | None = None, **fields) -> None:
        if options is not None and fields:
            raise TypeError("give ScoreOptions or its fields, not both")
        self.options = options if options is not None else ScoreOptions(**fields)
        from affbatch.affect.resolve import NO_MODEL, resolve_analyzer, resolve_placement

        o = self.options
        #: Where the models run (None with ``model="none"``: nothing runs).
        self.placement = None if o.model == NO_MODEL else resolve_placement(o.runtime, o.device, o.precision)
        # Frames are decoded (or moved once) where the models run: a GPU batch never visits the host.
        frames_device = self.placement.device if self.placement else (o.device if o.device != "auto" else "cpu")
        self.decoder = get_decoder(o.decoder, frames_device)
        self.analyzer: Analyzer = resolve_analyzer(o.model, o.detector, self.placement, o.align)
        ident = self.analyzer.identity
        #: One line for the user: which model makes the traces.
        self.description = ident.description
        #: What changes the traces: a stored result is reused only under the same settings.
        self.settings = {
            "fps": o.fps,
            "model": ident.model,
            "model_sha256": ident.model_sha256,
            "detector": ident.detector,
            "detector_sha256": ident.detector_sha256,
            # bf16 and fp32 traces differ (within the gates of tests/engines/test_precision_gates.py)
            "precision": ident.precision,
        }
        #: The traces' schema metadata.
        self.metadata = {
            "affbatch_version": affbatch.__version__,
            **self.settings,
            "runtime": ident.runtime,
            "device": ident.device,
            "decoder": self.decoder.name,
        }
        if choice := getattr(self.decoder, "choice", None):  # --decoder auto: which and why
            self.metadata["decoder_choice"] = choice

    def score(self, video: str | os.PathLike | InputVideo, on_crops: CropHook | None = None) -> VideoResult:
        """One video file (named in the outputs as given)."""
        if not isinstance(video, InputVideo):
            video = InputVideo(Path(video), os.fspath(video))
        return next(self.score_many([video], on_crops=on_crops))

    def score_many(
        self,
        inputs: Iterable[str | os.PathLike | InputVideo],
        listener: Listener | None = None,
        on_crops: CropHook | None = None,
    ) -> Iterator[VideoResult]:
        """A result per video, in order. ``inputs``: files and folders (folders are searched as
        ``affbatch score`` searches them), or :class:`InputVideo` objects, taken as they are."""
        videos = _as_videos(inputs)
        sizes = {v.name: file_size(v.path) for v in videos} if listener is not None else {}
        current: _InFlight | None = None
        for event in prefetch(self._decode(videos), depth=2):
            video = event.video
            if isinstance(event, VideoStarted):
                current = _InFlight(event)
                if listener is not None:
                    listener.video_started(video.name, sizes.get(video.name, 0))
                sink = None if on_crops is None else _bind(on_crops, video)
                self.analyzer.start(event.info, event.slots, sink)
            elif isinstance(event, FramesDecoded):
                self.analyzer.add(event.batch)
                current.decoded += len(event.batch)
                if listener is not None:
                    listener.frames_done(len(event.batch), current.decoded / max(1, current.started.wanted))
            elif isinstance(event, VideoDecoded):
                started, current = current.started, None
                fallback = self._note_fallback(started)
                try:
                    faces = self.analyzer.finish(started.slots)
                    table = frames_table(video.name, started.slots, started.times, faces)
                except AffbatchError as exc:
                    yield failed_result(video, exc, started.fingerprint, started.t0)
                    continue
                result = _scored(started, table, faces, with_crops=on_crops is not None)
                result.decoder_fallback = fallback
                yield result
            else:  # VideoUnreadable
                if listener is not None and (current is None or current.started.video is not video):
                    listener.video_started(video.name, sizes.get(video.name, 0))
                current = None
                yield failed_result(video, event.error, event.fingerprint, event.t0)

    def _note_fallback(self, started: VideoStarted) -> str | None:
        """``--decoder auto``: a video PyAV decoded instead of the GPU decoder, in the metadata
        (and in its result, for the run of worker processes, whose metadata is the parent's)."""
        fallbacks = getattr(self.decoder, "fallbacks", None)
        why = fallbacks.pop(str(started.info.path), None) if fallbacks else None
        if why:
            self.metadata.setdefault("decoder_fallbacks", {})[started.video.name] = why
        return why

    def _decode(self, videos: list[InputVideo]) -> Iterator[DecodeEvent]:
        """The decoding thread's events, video after video."""
        fps, batch_size = self.options.fps, self.options.batch_size
        for video in videos:
            print_: Fingerprint | None = None
            t0 = time.perf_counter()
            try:
                info = probe(video.path)
                print_ = fingerprint(video.path)
                slots, times = select_frames(info, fps)
                wanted = np.unique(slots)
                yield VideoStarted(video, info, slots, times, len(wanted), print_, t0)
                for batch in self.decoder.frames(info, wanted, batch_size):
                    yield FramesDecoded(video, batch)
                yield VideoDecoded(video)
            except Exception as exc:  # one video's failure, whatever it is, must not end the run
                yield VideoUnreadable(video, as_video_error(video, exc), print_, t0)


# -- the decoding thread's events, in order per video: VideoStarted, FramesDecoded any number of
# times, VideoDecoded; or VideoUnreadable at any point (then nothing more of that video). -------


@dataclass
class VideoStarted:
    video: InputVideo
    info: VideoInfo
    slots: np.ndarray  # source frame shown in each output frame
    times: np.ndarray  # time (s) of each output frame
    wanted: int  # distinct source frames to decode
    fingerprint: Fingerprint
    t0: float  # perf_counter when the thread began the video: probing counts in "seconds"


@dataclass
class FramesDecoded:
    video: InputVideo
    batch: FrameBatch


@dataclass
class VideoDecoded:
    video: InputVideo


@dataclass
class VideoUnreadable:
    video: InputVideo
    error: VideoError
    fingerprint: Fingerprint | None
    t0: float


DecodeEvent = VideoStarted | FramesDecoded | VideoDecoded | VideoUnreadable


@dataclass
class _InFlight:
    """The video whose batches the analysis is receiving."""

    started: VideoStarted
    decoded: int = field(default=0)


def _as_videos(inputs: Iterable[str | os.PathLike | InputVideo]) -> list[InputVideo]:
    inputs = list(inputs)
    if all(isinstance(i, InputVideo) for i in inputs):
        return inputs
    if any(isinstance(i, InputVideo) for i in inputs):
        raise TypeError("give paths or InputVideo objects, not both")
    return collect_videos(inputs)


def _bind(on_crops: CropHook, video: InputVideo):
    return lambda detection, crops: on_crops(video, detection, crops)


def _scored(started: VideoStarted, table: pa.Table, faces: dict | None, with_crops: bool) -> VideoResult:
    info = started.info
    row = ManifestRow(
        video=started.video.name,
        status="ok",
        frames=len(started.slots),
        native_fps=round(info.native_fps, 6),
        duration_s=round(info.duration_s, 6),
        width=info.width,
        height=info.height,
        codec=info.codec,
        seconds=round(time.perf_counter() - started.t0, 3),
    )
    crop_index = None
    if with_crops:
        crop_index = np.full(table.num_rows, -1, np.int64)
        if faces is not None:  # face rows keep their order in the table (frames_table sorts stably by frame)
            crop_index[table.column("track").is_valid().to_numpy(zero_copy_only=False)] = faces["detection"]
    return VideoResult(started.video, row, table, started.fingerprint, crop_index)


def failed_result(video: InputVideo, exc: Exception, print_: Fingerprint | None, t_start: float) -> VideoResult:
    """The result of a video that could not be scored: its reason, one line."""
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
    return VideoResult(video, row, None, print_)


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
