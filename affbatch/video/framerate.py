"""Which source frame each output frame shows: ffmpeg's ``fps`` filter, replayed on timestamps.

The paper converts every video to 30 fps; the label files of Aff-Wild2 index the frames that
``ffmpeg -vf fps=30`` produced. To be exact, and identical for every decoder backend, we do not
resample decoded frames: we replay the filter's decisions on the presentation timestamps that
demuxing gives (no decoding), as ffmpeg 5.1's command line feeds them to the filter:

* timestamps are shifted by the file's start time (``ffmpeg`` without ``-copyts``),
* each frame's pts is rescaled to the output time base 1/fps, rounding to nearest, halves
  away from zero (``rounding=near``, the default),
* the first frame's rounded pts opens slot 0; a frame is dropped when the next frame's rounded
  pts is at or before the slot being filled, otherwise it fills the slot and the slot advances,
* at end of stream (``eof_action=round``) the last frame fills slots until the end timestamp,
  the last frame's pts plus its duration, rounded the same way.

See libavfilter/vf_fps.c (``write_frame``, ``update_eof_pts``) and fftools/ffmpeg.c
(``process_input_packet``: the end-of-stream pts is ``ist->next_pts``) of FFmpeg 5.1.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Literal

import numpy as np

from affbatch.errors import VideoError

if TYPE_CHECKING:
    from affbatch.video.probe import VideoInfo

#: The paper's frame rate: "we converted them to have the same fps value, equal to 30".
PAPER_FPS = Fraction(30)

#: ``--fps``: the paper's 30 fps, or every source frame at the video's own rate.
FpsMode = Literal["30", "native"]
FPS_CHOICES: tuple[FpsMode, ...] = ("30", "native")

#: A timestamp jump that would make more output frames than this is a broken file, not a
#: pause: 24 hours at 30 fps.
MAX_OUTPUT_FRAMES = 24 * 3600 * int(PAPER_FPS)

#: FFmpeg's internal time base (AV_TIME_BASE_Q), through which the command line converts
#: the end-of-stream timestamp.
AV_TIME_BASE = Fraction(1, 1_000_000)


def rescale_near_inf(value: int, src: Fraction, dst: Fraction) -> int:
    """``av_rescale_q_rnd(value, src, dst, AV_ROUND_NEAR_INF)`` with exact integer arithmetic."""
    num = value * src.numerator * dst.denominator
    den = src.denominator * dst.numerator
    q, r = divmod(abs(num), den)
    if 2 * r >= den:  # halves go away from zero
        q += 1
    return q if num >= 0 else -q


def end_pts(last_pts: int, last_duration: int, time_base: Fraction, average_rate: Fraction | None) -> int:
    """The end-of-stream timestamp ffmpeg sends to the filter graph, in ``time_base``.

    ``ist->next_pts`` is kept in microseconds: the last frame's pts plus its packet duration,
    each converted on its own, and the sum converted back. A packet without a duration lasts
    one frame at the stream's average rate (the decoder's ``framerate``), in whole microseconds.
    """
    if last_duration > 0:
        duration_us = rescale_near_inf(last_duration, time_base, AV_TIME_BASE)
    elif average_rate:
        duration_us = 1_000_000 * average_rate.denominator // average_rate.numerator
    else:
        duration_us = 0
    micros = rescale_near_inf(last_pts, time_base, AV_TIME_BASE) + duration_us
    return rescale_near_inf(micros, AV_TIME_BASE, time_base)


def fps_filter_slots(
    pts: np.ndarray | list[int],
    time_base: Fraction,
    eof_pts: int,
    fps: Fraction = PAPER_FPS,
) -> np.ndarray:
    """Replay ``fps=FPS`` and return, for each output slot, the index of the frame it shows.

    Args:
        pts: presentation timestamps in ``time_base``, in presentation order (ascending), already
            shifted as ffmpeg shifts them (see ``ffmpeg_input_offset``).
        time_base: the stream's time base.
        eof_pts: end-of-stream timestamp in ``time_base`` (see ``end_pts``).
        fps: output frame rate.

    Returns:
        int64 array: ``slots[k]`` is the position in ``pts`` of the frame shown in output frame k.
        Empty when ``pts`` is empty.
    """
    out_tb = 1 / Fraction(fps)
    rounded = [rescale_near_inf(int(p), time_base, out_tb) for p in pts]
    if not rounded:
        return np.zeros(0, np.int64)
    eof_slot = rescale_near_inf(int(eof_pts), time_base, out_tb)
    shown: list[int] = []
    next_slot = rounded[0]
    current = 0
    for j in range(1, len(rounded)):
        # Two frames are buffered: ``current`` and ``j``. Emit ``current`` until ``j`` is due.
        while rounded[j] > next_slot:
            shown.append(current)
            next_slot += 1
        current = j
    while eof_slot > next_slot:
        shown.append(current)
        next_slot += 1
    return np.asarray(shown, dtype=np.int64)


def file_start_us(stream_starts) -> int | None:
    """The file's start time as FFmpeg 5.1 computes it (``update_stream_timings``), in microseconds.

    ``stream_starts``: (first timestamp, time base, stream type) of each stream, the first
    timestamp being the smallest pts of a packet that is not discarded. Subtitle and data streams
    count only when they start less than a second before the others.
    """
    media: list[int] = []
    text: list[int] = []
    for ts, time_base, kind in stream_starts:
        (text if kind in ("subtitle", "data") else media).append(rescale_near_inf(ts, time_base, AV_TIME_BASE))
    start = min(media) if media else None
    if text and (start is None or (min(text) < start and start - min(text) < 1_000_000)):
        start = min(text)
    return start


def ffmpeg_input_offset(container_start_us: int | None, time_base: Fraction) -> int:
    """The shift ffmpeg adds to every pts of a stream: minus the file's start time.

    ``container_start_us`` is ``AVFormatContext.start_time`` (microseconds, over all streams).
    """
    if container_start_us is None:
        return 0
    return rescale_near_inf(-int(container_start_us), AV_TIME_BASE, time_base)


def select_frames(info: VideoInfo, fps: FpsMode) -> tuple[np.ndarray, np.ndarray]:
    """Source frame and time (s) of every output frame: ffmpeg's ``fps=30`` or every frame."""
    if fps == "native":
        return np.arange(info.frames, dtype=np.int64), info.times_s()
    slots = fps_filter_slots(info.pts + info.offset, info.time_base, info.eof_pts, PAPER_FPS)
    if len(slots) > MAX_OUTPUT_FRAMES:
        hours = len(slots) / float(PAPER_FPS) / 3600
        jump = f"they jump {info.largest_jump}, " if info.largest_jump else ""
        raise VideoError(
            f"{info.path}: broken timestamps: {jump}which would make {hours:.0f} h of output "
            f"at {PAPER_FPS} fps for {info.frames} frames"
        )
    return slots, np.arange(len(slots), dtype=np.float64) / float(PAPER_FPS)
