"""PyAV (FFmpeg's libavcodec) decoding on the CPU, with the codec's own frame/slice threads."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterator
from functools import partial

import av
import numpy as np

from affbatch.errors import DecodeFailure
from affbatch.video.decoders.base import Decoder, FrameBatch
from affbatch.video.probe import DECODERS_KEEPING_DISCARDED, VideoInfo, open_container


class PyAVDecoder(Decoder):
    name = "pyav"

    def __init__(self, threads: int = 0) -> None:
        #: Decoder threads per video; 0 lets FFmpeg pick (one per core, frame and slice threads).
        self.threads = threads

    def frames(self, info: VideoInfo, wanted: np.ndarray, batch_size: int) -> Iterator[FrameBatch]:
        wanted = np.asarray(wanted, np.int64)
        times = info.times_s()
        # Frames are identified by pts, so a frame the decoder drops (corrupt data) cannot shift
        # the numbering of the frames after it. Equal timestamps are taken in order.
        slots: dict[int, deque[int]] = defaultdict(deque)
        for i, p in enumerate(info.pts.tolist()):
            slots[p].append(i)
        is_wanted = np.zeros(info.frames, bool)
        is_wanted[wanted] = True

        buf = np.empty((min(batch_size, len(wanted)), info.height, info.width, 3), np.uint8)
        idx: list[int] = []
        produced = 0
        counter = 0
        quarter_turns = info.rotation // 90
        errors: list[str] = []
        with open_container(info.path) as container:
            stream = next(s for s in container.streams if s.index == info.stream_index)
            stream.thread_type = "AUTO"
            stream.thread_count = self.threads
            for frame in self._decode(container, stream, errors):
                ts = frame.pts
                queue = slots.get(ts) if ts is not None else None
                i = queue.popleft() if queue else counter  # no timestamp: trust the order
                counter = i + 1
                if i >= info.frames or not is_wanted[i]:
                    continue
                is_wanted[i] = False
                image = frame.to_ndarray(format="rgb24")
                if quarter_turns:
                    image = np.rot90(image, quarter_turns)
                if image.shape != buf.shape[1:]:
                    raise DecodeFailure(
                        f"{info.path}: frame {i} is {image.shape[1]}x{image.shape[0]}, "
                        f"the video started at {info.width}x{info.height} (size changes mid-stream are not supported)"
                    )
                buf[len(idx)] = image
                idx.append(i)
                if len(idx) == len(buf):
                    yield self._batch(buf, idx, times)
                    produced += len(idx)
                    idx = []
                    buf = np.empty_like(buf)
            if idx:
                yield self._batch(buf[: len(idx)], idx, times)
                produced += len(idx)
        if produced < len(wanted):
            missing = np.flatnonzero(is_wanted)
            why = f": {errors[0]}" if errors else ""
            raise DecodeFailure(
                f"{info.path}: {len(missing)} of its {info.frames} readable frames could not be decoded "
                f"(first: frame {missing[0]}){why}"
            )

    @staticmethod
    def _decode(container, stream, errors: list[str]) -> Iterator[av.VideoFrame]:
        """Decode every packet; a packet that fails is noted and skipped, like ffmpeg does."""
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return  # demux ends with an empty packet, whose decode() drained the decoder
            except av.error.FFmpegError as exc:  # the file changed since it was probed
                errors.append(f"reading packets: {exc.strerror or exc}")
                return
            decode = packet.decode
            if packet.is_discard and stream.codec_context.name in DECODERS_KEEPING_DISCARDED:
                # ffmpeg 5.1 shows their frames (see probe): decoded as a packet without the flag
                kept = av.Packet(bytes(packet))
                kept.pts, kept.dts, kept.time_base = packet.pts, packet.dts, packet.time_base
                decode = partial(stream.codec_context.decode, kept)
            try:
                yield from decode()
            except av.error.FFmpegError as exc:
                errors.append(exc.strerror or str(exc))

    @staticmethod
    def _batch(buf: np.ndarray, idx: list[int], times: np.ndarray) -> FrameBatch:
        source = np.asarray(idx, np.int32)
        return FrameBatch(images=buf, source_index=source, time_s=times[source])
