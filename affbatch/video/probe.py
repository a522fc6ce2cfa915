"""Open a video, find its video stream and read every presentation timestamp by demuxing.

Demuxing reads packets without decoding them, so this is fast and backend-independent: every
decoder is told which source frames to produce from the result (see ``framerate``). The first
frame is decoded too, because only a decoded frame proves the stream is decodable and carries
the display rotation.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from affbatch.errors import NoVideoStream, TruncatedVideo, VideoOpenFailure
from affbatch.video.container import Layout, container_layout
from affbatch.video.discont import describe_jump, first_segment_start, stitch
from affbatch.video.framerate import (
    AV_TIME_BASE,
    end_pts,
    ffmpeg_input_offset,
    file_start_us,
    rescale_near_inf,
)
from affbatch.video.inputs import IMAGE_FORMATS

#: How many packets may be fed to the decoder before the first frame must have come out.
#: Generous: frame-threaded decoders and long open GOPs hold frames back.
FIRST_FRAME_PACKETS = 256

#: libavformat's AVFMT_TS_DISCONT: the format allows timestamp discontinuities (MPEG-TS, MPEG-PS).
TS_DISCONT = 0x200
#: Decoders that output the frames of packets an edit list discards, in ffmpeg 5.1: those on
#: libavcodec's receive_frame API, which skips the check of AV_FRAME_FLAG_DISCARD that the
#: others go through (seen with MJPEG in MOV against Debian's ffmpeg).
DECODERS_KEEPING_DISCARDED = frozenset({"mjpeg"})
#: Timestamp bits of MPEG-TS/PS (90 kHz): they wrap after 26.5 h.
PTS_WRAP_BITS = 33

#: A stream that ends this much before the duration its header announces is incomplete
#: (when the file's own structure cannot tell whether it was cut short; see ``Layout``).
TRUNCATION_SLACK_S = 1.0

#: The same for a file whose structure (MP4, Matroska, AVI) is complete: the header's duration
#: and the frames may differ by a last frame's length that the file does not store, not more.
COMPLETE_SLACK_S = 0.25


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
    pts: np.ndarray = field(repr=False)  # int64 (n,), as stored in the file
    #: What ffmpeg adds to every pts (minus the file's start time), or to each (int64 (n,)) where
    #: it stitches timestamp discontinuities (see ``discont``). ``pts + offset`` ascends.
    offset: int | np.ndarray
    eof_pts: int  # ffmpeg's end-of-stream timestamp, offset applied
    largest_jump: str = ""  # the largest timestamp jump between packets in file order, in words

    @property
    def frames(self) -> int:
        return len(self.pts)

    def times_s(self) -> np.ndarray:
        """Seconds from the first frame to each source frame (float64)."""
        timeline = self.pts + self.offset
        return (timeline - timeline[0]).astype(np.float64) * float(self.time_base)


def check_file(path: Path) -> None:
    """Fail early, with a plain reason, on what FFmpeg would report as a cryptic error."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoOpenFailure(f"{path}: file not found") from None
    except OSError as exc:
        raise VideoOpenFailure(f"{path}: cannot stat: {exc.strerror}") from None
    # From the one stat: a second look could see the file vanish in between (a race).
    if not stat.S_ISREG(st.st_mode):
        raise VideoOpenFailure(f"{path}: not a regular file")
    if st.st_size == 0:
        raise VideoOpenFailure(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except FileNotFoundError:  # removed since the stat
        raise VideoOpenFailure(f"{path}: file not found") from None
    except PermissionError:
        raise VideoOpenFailure(f"{path}: permission denied") from None
    except OSError as exc:
        raise VideoOpenFailure(f"{path}: cannot read: {exc.strerror}") from None


def open_container(path: Path) -> av.container.InputContainer:
    """``av.open`` with its errors turned into one-line reasons."""
    check_file(path)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if exc.errno == errno.ENOENT:
            raise VideoOpenFailure(f"{path}: file not found") from None
        layout = container_layout(path)
        if layout.describe():  # FFmpeg's own words ("moov atom not found", ...) say less
            raise TruncatedVideo(f"{path}: truncated or unfinished: {layout.describe()}") from None
        if layout.kind is not None:
            raise VideoOpenFailure(f"{path}: corrupt {layout.kind} file: {exc.strerror or exc}") from None
        if isinstance(exc, av.error.InvalidDataError):
            raise VideoOpenFailure(f"{path}: not a video: FFmpeg recognises no media format in it") from None
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
        if container.format.name in IMAGE_FORMATS:
            raise VideoOpenFailure(f"{path}: an image ({_image_kind(container)}), not a video")
        layout = container_layout(path)
        try:
            stream = video_stream(container, path)
        except NoVideoStream as exc:
            if layout.describe():  # the streams are described past the end of the file
                raise TruncatedVideo(f"{path}: truncated: {layout.describe()}; no video stream is left") from None
            raise exc from None
        ctx = stream.codec_context
        if ctx is None:  # FFmpeg knows no codec for it
            if layout.describe():  # a stream described by an index that is cut off
                raise TruncatedVideo(f"{path}: truncated: {layout.describe()}; its video stream is unreadable")
            raise VideoOpenFailure(f"{path}: no decoder for its video stream (unknown codec)")
        codec = ctx.name
        stream_index = stream.index
        time_base = stream.time_base or Fraction(1, 90000)
        stream_rate = stream.average_rate
        average_rate = stream_rate or stream.guessed_rate
        declared_frames = stream.frames
        declared_end = _declared_duration_s(stream)
        stream_duration = stream.duration

        stamps: list[int] = []
        decode_stamps: list[int | None] = []  # dts, for stitching discontinuities
        durations: list[int] = []
        # First timestamp of every stream, audio included: ffmpeg shifts all of them by the
        # earliest (see framerate.file_start_us).
        starts: dict[int, tuple[int, Fraction, str]] = {}
        # Two behaviours of ffmpeg 5.1 seen against its output: with MPEG-TS/PS (formats with
        # timestamp discontinuities) only the video stream's own start counts, and in MP4/MOV
        # an edit list that starts inside the first audio packet (AAC priming) starts the audio
        # at zero, not at that packet's negative pts.
        discontinuous = bool(container.format.flags & TS_DISCONT)
        other_streams_count = not discontinuous
        is_mov = "mov" in container.format.name.split(",")
        reordered = False
        untimed: list[int] = []  # durations of packets without any timestamp
        first_frame = None
        fed = 0
        corrupt = 0
        held = 0  # video packets the container holds, those an edit list discards included
        data_end = -1  # the furthest position a packet of any stream was read from
        try:
            for packet in container.demux():
                if packet.size == 0:  # the flush packet at end of stream
                    continue
                if packet.pos is not None and packet.pos > data_end:
                    data_end = packet.pos
                ts = packet.pts if packet.pts is not None else packet.dts
                if packet.stream_index != stream_index:
                    if ts is not None and not packet.is_discard and other_streams_count:
                        _note_start(starts, packet, max(ts, 0) if is_mov else ts)
                    continue
                if first_frame is None and fed < FIRST_FRAME_PACKETS:
                    fed += 1
                    first_frame = _first(ctx, packet)
                held += 1
                # A packet an edit list discards is decoded but yields no frame (except with the
                # decoders that keep it, see DECODERS_KEEPING_DISCARDED).
                if packet.is_discard and codec not in DECODERS_KEEPING_DISCARDED:
                    continue
                if ts is None:
                    untimed.append(packet.duration or 0)
                    continue
                if not packet.is_discard:  # the file's start time counts the frames it shows
                    _note_start(starts, packet, ts)
                reordered = reordered or (packet.dts is not None and packet.dts != ts)
                stamps.append(ts)
                decode_stamps.append(packet.dts)
                durations.append(packet.duration or 0)
                corrupt += packet.is_corrupt  # partly read: its data runs past the end of the file
        except av.error.FFmpegError as exc:
            at = (max(stamps) - min(stamps)) * float(time_base) if stamps else 0.0
            raise TruncatedVideo(
                f"{path}: {_damage(layout)}: reading stops after {len(stamps)} frames ({at:.2f} s): "
                f"{exc.strerror or exc}{_why(layout)}"
            ) from None
        if not stamps and untimed:
            stamps, durations = _count_timestamps(untimed, time_base, average_rate)
            decode_stamps = list(stamps)
        if not stamps:
            if layout.describe():
                raise TruncatedVideo(f"{path}: truncated: no frame is left; {layout.describe()}")
            raise VideoOpenFailure(f"{path}: the video stream has no frames")
        if not _read_all_data(layout, data_end):
            _check_complete(
                path, layout, stamps, held, durations, time_base, average_rate, declared_frames, declared_end
            )
        if corrupt and layout.truncated:
            raise TruncatedVideo(
                f"{path}: truncated: the data of {corrupt} of its {len(stamps)} frames is cut off ({layout.describe()})"
            )
        if first_frame is None:
            first_frame = _first(ctx, None)
        if first_frame is None:
            raise VideoOpenFailure(
                f"{path}: no decodable frame: the {codec} decoder made no picture from "
                + (f"any of its {fed} packets" if fed < FIRST_FRAME_PACKETS else f"its first {fed} packets")
                + " (corrupt data, or a variant of the codec FFmpeg cannot decode)"
            )
        rotation = _rotation(first_frame)
        w, h = first_frame.width, first_frame.height
        # The rate the decoder found in the bitstream (H.264's VUI timing, for instance), which
        # ffmpeg uses for the duration of a last packet that has none.
        # ffmpeg 5.1 starts the decoder at the stream's average rate (``avg_frame_rate``; none
        # when libavformat cannot tell), not at the rate it guesses from the first timestamps.
        decoder_rate = ctx.framerate or stream_rate

    frame_us = 1_000_000 * decoder_rate.denominator // decoder_rate.numerator if decoder_rate else 0
    raw = np.asarray(stamps, np.int64)
    if discontinuous:
        start = first_segment_start(stamps, decode_stamps, durations, time_base, frame_us)
        start_us = rescale_near_inf(start, time_base, AV_TIME_BASE)
        shift = stitch(stamps, decode_stamps, durations, time_base, start_us, frame_us).shift
    else:
        shift = np.full(len(raw), ffmpeg_input_offset(file_start_us(starts.values()), time_base), np.int64)
    order = np.argsort(raw + shift, kind="stable")
    pts, offsets = raw[order], shift[order]
    offset = int(offsets[0]) if np.all(offsets == offsets[0]) else offsets
    timeline = pts + offsets
    last = int(order[-1])
    span_s = float((timeline[-1] - timeline[0]) * time_base)
    frame_s = float(1 / average_rate) if average_rate else 0.0

    if rotation in (90, 270):
        w, h = h, w
    duration_s = span_s + (float(durations[last] * time_base) if durations[last] else frame_s)
    # Frames per second of the video as a viewer counts them: frames over their span plus one
    # typical frame. Exact for constant rates (where the header's average can be skewed by the
    # last packet's duration), the average for variable ones.
    typical_s = float(np.median(np.diff(timeline))) * float(time_base) if len(pts) > 1 else frame_s
    span_with_last = span_s + typical_s
    native_fps = len(pts) / span_with_last if span_with_last > 0 else float(average_rate or 0)
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
        eof_pts=end_pts(
            int(timeline[-1]),
            _last_frame_duration(durations, is_mov, reordered, stream_duration, stamps[-1]),
            time_base,
            decoder_rate,
        ),
        largest_jump=_largest_jump(raw, time_base, discontinuous and time_base == Fraction(1, 90000)),
    )


def _largest_jump(raw: np.ndarray, time_base: Fraction, wraps: bool) -> str:
    """The largest jump between consecutive packets' timestamps in file order, in words, and
    where it is (seconds after the first frame). MPEG-TS/PS timestamps are 33-bit: libavformat
    unwraps a jump back as a jump forward by nearly 2**33 ticks (26.5 h), which is undone here."""
    if len(raw) < 2:
        return ""
    steps = np.diff(raw)
    k = int(np.argmax(np.abs(steps)))
    step = int(steps[k])
    if wraps and abs(step) > 1 << (PTS_WRAP_BITS - 1):
        step -= (1 << PTS_WRAP_BITS) * (1 if step > 0 else -1)
    at = float((raw[k] - raw[0]) * time_base)
    return f"{describe_jump(float(step * time_base))} at {at:.2f} s"


def _read_all_data(layout: Layout, data_end: int) -> bool:
    """Demuxing went through all the data the container holds, so that a header claiming more
    (a duration, a frame count) is wrong about the file, not a sign of missing frames. An MP4
    index places every sample: the data of each is in the file (the demuxer reads them by the
    index; its edit list decides which are shown, dropping some, and leaves none unread). A
    Matroska file has no index of every frame: a packet of its last block was read."""
    if layout.truncated:
        return False
    if layout.frames_listed:
        return not layout.frames_cut
    return layout.last_block is not None and data_end >= layout.last_block


def _check_complete(
    path, layout: Layout, stamps, held, durations, time_base, average_rate, declared_frames, declared_end
):
    """Raise TruncatedVideo when demuxing found fewer frames than the file announces.

    A header's frame count is exact: it counts the packets an edit list discards too
    (``held``). A header's duration is compared with the end of the last
    frame, with a slack for a last frame whose length the file does not store: a quarter of a
    second (or two frames) where the file's structure is complete, a second where it cannot be
    checked, and 1.5 frames where the file is known to be cut short (a cut that spared every
    frame, only an index after them, leaves the video complete).
    """
    n = len(stamps)
    damage, why = _damage(layout), _why(layout)
    frame_s = float(1 / average_rate) if average_rate else 0.0
    last = int(np.argmax(stamps))
    last_s = float(durations[last] * time_base) or frame_s
    # The end of the last frame, counted from the first frame or from zero, whichever is
    # later: a header may count a stream's duration either way.
    end_s = float((stamps[last] - min(min(stamps), 0)) * time_base) + last_s
    if layout.truncated:
        slack = max(1.5 * frame_s, 0.002)
    else:
        slack = max(COMPLETE_SLACK_S if layout.complete else TRUNCATION_SLACK_S, 2 * frame_s)
    # A frame count that includes frames stored empty (an AVI's dropped frames, which demuxing
    # skips) is reached by the timeline, not by the packets; but not in a file known to be cut,
    # where the missing packets may be reordered frames from inside the timeline (B-frames).
    reached = frame_s and end_s >= declared_frames * frame_s - slack
    if declared_frames and held < declared_frames and (layout.truncated or not reached):
        raise TruncatedVideo(
            f"{path}: {damage}: {held} of the {declared_frames} frames its header lists are readable{why}"
        )
    if declared_end:
        if end_s < declared_end - slack:
            missing = f", about {round((declared_end - end_s) / frame_s)} frames missing" if frame_s else ""
            raise TruncatedVideo(
                f"{path}: {damage}: its {n} readable frames stop at {end_s:.2f} s of the {declared_end:.2f} s "
                f"its header announces{missing}{why}"
            )
    elif layout.truncated and not declared_frames:
        raise TruncatedVideo(f"{path}: truncated: {layout.describe()}; which frames are missing cannot be told")


def _damage(layout: Layout) -> str:
    """What to call frames missing from a file: its structure tells a cut from damage."""
    if layout.truncated:
        return "truncated"
    return "corrupt data" if layout.complete else "truncated or corrupt"


def _why(layout: Layout) -> str:
    if layout.truncated:
        return f" ({layout.describe()})"
    return " (the file is complete: its data is damaged)" if layout.complete else ""


def _last_frame_duration(durations: list[int], is_mov: bool, reordered: bool, stream_duration, last_ts: int) -> int:
    """The packet duration ffmpeg 5.1 adds to the last frame's pts to find the end of stream.

    The decoder stamps the frames it drains at the end with the duration of the last packet it
    was fed (libavcodec's ``last_pkt_props``): the last packet in file order. ffmpeg 5.1's
    MP4/MOV demuxer reports no packet durations for a track whose edit list it rewrites for
    reordered frames (B-frames, ``mov_fix_index``); ffmpeg then falls back to one frame at the
    decoder's rate (``end_pts``). Without reordering it gives each packet the time to the next
    one's, and the last one the time to the track's end (``st->duration``): beyond one frame
    where an edit list ends past the last frame's start (a trim by a fraction of a frame). Both
    were seen against its output (newer demuxers, PyAV's, give the last frame its own duration).
    """
    if not is_mov:
        return durations[-1]
    if reordered:
        return 0
    if stream_duration and stream_duration >= last_ts:
        return stream_duration - last_ts
    return durations[-1]


def _count_timestamps(durations: list[int], time_base: Fraction, rate: Fraction | None):
    """Timestamps for a stream that has none (raw H.264/HEVC elementary streams): frame i at i
    frame durations, as libavformat stamps them for ffmpeg (the packet duration, else one frame
    at the stream's rate)."""
    step = durations[0] or (round(1 / (rate * time_base)) if rate else 1)
    return [i * step for i in range(len(durations))], [step] * len(durations)


def _image_kind(container) -> str:
    """'JPEG', 'PNG', ...: what the picture is, by its codec."""
    codec = next((s.codec_context.name for s in container.streams.video if s.codec_context), None)
    return {"mjpeg": "JPEG", None: container.format.name}.get(codec, (codec or "").upper())


def _note_start(starts: dict, packet, ts: int) -> None:
    index = packet.stream_index
    if index not in starts or ts < starts[index][0]:
        starts[index] = (ts, packet.time_base, packet.stream.type)


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
