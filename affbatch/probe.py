"""Open a video, find its video stream and read every presentation timestamp by demuxing.

Demuxing reads packets without decoding them, so this is fast and backend-independent: every
decoder is told which source frames to produce from the result (see ``framerate``). The first
frame is decoded too, because only a decoded frame proves the stream is decodable and carries
the display rotation.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from affbatch.errors import NoVideoStream, TruncatedVideo, VideoOpenFailure
from affbatch.framerate import end_pts, ffmpeg_input_offset

#: How many packets may be fed to the decoder before the first frame must have come out.
#: Generous: frame-threaded decoders and long open GOPs hold frames back.
FIRST_FRAME_PACKETS = 256

#: A stream that ends this much before the duration its header announces is truncated.
TRUNCATION_SLACK_S = 1.0


@dataclass(frozen=True)
class VideoInfo:
    """What demuxing a video tells, before any frame is converted.

    Timestamps are in ``time_base`` units, in presentation order; ``pts[i]`` is source frame i,
    the i-th frame a decoder outputs (the numbering of Aff-Wild2's label files).
    """

    path: Path
    codec: str
    width: int  # as displayed, after rotation
    height: int
    rotation: int  # degrees counter-clockwise the decoded picture is turned for display
    native_fps: float
    duration_s: float
    time_base: Fraction
    stream_index: int
    pts: np.ndarray = field(repr=False)  # int64 (n,), ascending, as stored in the file
    offset: int  # what ffmpeg adds to every pts (minus the file's start time)
    eof_pts: int  # ffmpeg's end-of-stream timestamp, offset applied

    @property
    def frames(self) -> int:
        return len(self.pts)

    def times_s(self) -> np.ndarray:
        """Seconds from the first frame to each source frame (float64)."""
        return (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)


def check_file(path: Path) -> None:
    """Fail early, with a plain reason, on what FFmpeg would report as a cryptic error."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoOpenFailure(f"{path}: file not found (removed after the run started?)") from None
    except OSError as exc:
        raise VideoOpenFailure(f"{path}: cannot stat: {exc.strerror}") from None
    if not os.path.isfile(path):
        raise VideoOpenFailure(f"{path}: not a regular file")
    if st.st_size == 0:
        raise VideoOpenFailure(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError:
        raise VideoOpenFailure(f"{path}: permission denied") from None
    except OSError as exc:
        raise VideoOpenFailure(f"{path}: cannot read: {exc.strerror}") from None


def open_container(path: Path) -> av.container.InputContainer:
    """``av.open`` with its errors turned into one-line reasons."""
    check_file(path)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise VideoOpenFailure(f"{path}: not a video FFmpeg can read (invalid data)") from None
    except av.error.FFmpegError as exc:
        if exc.errno == errno.ENOENT:
            raise VideoOpenFailure(f"{path}: file not found") from None
        raise VideoOpenFailure(f"{path}: cannot open: {exc.strerror or exc}") from None


def video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first real video stream (cover art, an attached picture, does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams})
    have = f" (it has {', '.join(kinds)} only)" if kinds else " (it has no streams)"
    raise NoVideoStream(f"{path}: no video stream{have}")


def probe(path: Path) -> VideoInfo:
    """Demux ``path`` completely and decode its first frame.

    Raises:
        VideoOpenFailure, NoVideoStream, TruncatedVideo, DecodeFailure: with a one-line reason.
    """
    path = Path(path)
    with open_container(path) as container:
        stream = video_stream(container, path)
        ctx = stream.codec_context
        codec = ctx.name
        stream_index = stream.index
        time_base = stream.time_base or Fraction(1, 90000)
        average_rate = stream.average_rate or stream.guessed_rate
        declared_frames = stream.frames
        declared_end = _declared_duration_s(stream)
        start_time = container.start_time

        stamps: list[int] = []
        durations: list[int] = []
        first_frame = None
        fed = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet at end of stream
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    continue  # ffmpeg discards frames without timestamps too
                stamps.append(ts)
                durations.append(packet.duration or 0)
                if first_frame is None and fed < FIRST_FRAME_PACKETS:
                    fed += 1
                    first_frame = _first(ctx, packet)
        except av.error.FFmpegError as exc:
            if not stamps:
                raise VideoOpenFailure(f"{path}: cannot read packets: {exc.strerror}") from None
            at = (stamps[-1] - min(stamps)) * float(time_base)
            raise TruncatedVideo(
                f"{path}: corrupt or truncated after {len(stamps)} frames ({at:.2f} s): {exc.strerror}"
            ) from None
        if not stamps:
            raise VideoOpenFailure(f"{path}: the video stream has no frames")
        if first_frame is None:
            first_frame = _first(ctx, None)
        if first_frame is None:
            raise VideoOpenFailure(f"{path}: no decodable frame ({codec})")
        rotation = _rotation(first_frame)
        w, h = first_frame.width, first_frame.height

    order = np.argsort(np.asarray(stamps, np.int64), kind="stable")
    pts = np.asarray(stamps, np.int64)[order]
    last = int(order[-1])
    span_s = float((pts[-1] - pts[0]) * time_base)
    frame_s = float(1 / average_rate) if average_rate else 0.0
    if declared_frames and len(pts) < declared_frames:
        raise TruncatedVideo(f"{path}: truncated: {len(pts)} of the {declared_frames} frames its header lists")
    if declared_end and span_s + frame_s < declared_end - TRUNCATION_SLACK_S:
        raise TruncatedVideo(
            f"{path}: truncated: frames end at {span_s + frame_s:.2f} s "
            f"of the {declared_end:.2f} s its header announces"
        )

    offset = ffmpeg_input_offset(start_time, time_base)
    if rotation in (90, 270):
        w, h = h, w
    duration_s = span_s + (float(durations[last] * time_base) if durations[last] else frame_s)
    native_fps = float(average_rate) if average_rate else (len(pts) / duration_s if duration_s else 0.0)
    return VideoInfo(
        path=path,
        codec=codec,
        width=w,
        height=h,
        rotation=rotation,
        native_fps=native_fps,
        duration_s=duration_s,
        time_base=time_base,
        stream_index=stream_index,
        pts=pts,
        offset=offset,
        # The decoder stamps every frame, the last one included, with the duration of the last
        # packet it was fed (libavcodec's ``last_pkt_props``): the last packet in file order.
        eof_pts=end_pts(int(pts[-1]) + offset, durations[-1], time_base, average_rate),
    )


def _first(ctx, packet):
    """Feed one packet (None: flush) and return the first decoded frame, if any."""
    try:
        frames = ctx.decode(packet)
    except av.error.FFmpegError:
        return None  # a broken leading packet; later ones may still decode
    return frames[0] if frames else None


def _rotation(frame: av.VideoFrame) -> int:
    """Display rotation of a decoded frame, in degrees counter-clockwise, one of 0/90/180/270.

    ffmpeg's autorotate turns by the display matrix rounded to quarter turns; so do we.
    """
    try:
        degrees = frame.rotation or 0
    except (AttributeError, ValueError):
        return 0
    return int(round(degrees / 90.0)) % 4 * 90


def _declared_duration_s(stream) -> float | None:
    """The stream duration the container header announces, if it announces one."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION")  # Matroska, as written by FFmpeg
    if tag:
        try:
            hh, mm, ss = tag.split(":")
            return int(hh) * 3600 + int(mm) * 60 + float(ss)
        except ValueError:
            return None
    return None
