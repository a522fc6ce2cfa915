"""Timestamp discontinuities stitched as ffmpeg 5.1's command line stitches them.

Formats that allow discontinuities (libavformat's ``AVFMT_TS_DISCONT``: MPEG-TS, MPEG-PS, ...)
carry timestamps that jump where captures were joined or a broadcast's clock was reset. ffmpeg
(fftools/ffmpeg.c, ``process_input``) predicts each packet's dts from the one before (its dts
plus its duration, else one frame at the decoder's rate, ``ist->next_dts``); a packet more than
``-dts_delta_threshold`` away from the prediction, or more than 0.1 s before the previous dts,
is moved onto the prediction, and so is everything after it (the file's ``ts_offset``). The
fps filter then sees one continuous timeline; without this replay, a forward jump of an hour is
an hour of one frame held, and a jump back reorders the frames.

``ist->pts`` (the last decoded frame's pts), which ffmpeg compares too, is not replayed: frame
threads make the decoder's output lag its input, so it stays behind the packets' dts.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from affbatch.video.framerate import AV_TIME_BASE, rescale_near_inf

#: ffmpeg's ``-dts_delta_threshold`` default, in seconds.
DTS_DELTA_THRESHOLD_S = 10
#: A packet this far (µs) before the previous packet's dts is a jump back, whatever its size.
BACKWARD_US = 100_000


@dataclass(frozen=True)
class Stitched:
    """Per packet (file order), what ffmpeg adds to its pts; and where the timeline jumped."""

    shift: np.ndarray  # int64, in the stream's time base
    jumps: list[tuple[int, int]]  # (packet index, jump in µs: + forward, - back)


def stitch(
    pts: list[int],
    dts: list[int | None],
    durations: list[int],
    time_base: Fraction,
    start_us: int | None,
    frame_us: int,
) -> Stitched:
    """Replay ffmpeg's stitching over the video packets of a file, in file order.

    ``start_us`` is the file's start time (ffmpeg's first ``ts_offset`` is minus it);
    ``frame_us`` is one frame at the decoder's rate, for packets without a duration.
    """
    ts_offset = -int(start_us or 0)
    threshold = DTS_DELTA_THRESHOLD_S * 1_000_000
    shift = np.zeros(len(pts), np.int64)
    jumps: list[tuple[int, int]] = []
    next_dts = last_dts = None
    for k, (p, d, duration) in enumerate(zip(pts, dts, durations, strict=True)):
        d = p if d is None else d
        moved = rescale_near_inf(ts_offset, AV_TIME_BASE, time_base)
        pkt_dts = rescale_near_inf(d + moved, time_base, AV_TIME_BASE)
        if next_dts is not None:
            delta = pkt_dts - next_dts
            if abs(delta) > threshold or pkt_dts + BACKWARD_US < last_dts:
                ts_offset -= delta
                moved -= rescale_near_inf(delta, AV_TIME_BASE, time_base)
                jumps.append((k, delta))
        shift[k] = moved
        last_dts = rescale_near_inf(d + moved, time_base, AV_TIME_BASE)
        step = rescale_near_inf(duration, time_base, AV_TIME_BASE) if duration else frame_us
        next_dts = last_dts + step if step else None
    return Stitched(shift, jumps)


def first_segment_start(pts: list[int], dts: list[int | None], durations, time_base: Fraction, frame_us: int) -> int:
    """The smallest pts before the first discontinuity: where ffmpeg's timeline starts (the
    file's start time comes from its first packets, not from a jump back later on)."""
    jumps = stitch(pts, dts, durations, time_base, 0, frame_us).jumps
    end = jumps[0][0] if jumps else len(pts)
    return min(pts[:end])


def describe_jump(delta_s: float) -> str:
    """'1.00 h back', '20.0 min forward', '4.97 s back'."""
    size = abs(delta_s)
    if size >= 3600:
        text = f"{size / 3600:.2f} h"
    elif size >= 60:
        text = f"{size / 60:.1f} min"
    else:
        text = f"{size:.2f} s"
    return f"{text} {'back' if delta_s < 0 else 'forward'}"
