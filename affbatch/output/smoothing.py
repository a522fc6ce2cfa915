"""Temporal smoothing of traces: a centred moving mean per face track (``--smooth SECONDS``).

Why a moving mean: the best published systems of the ABAW challenges on Aff-Wild2 smooth their
per-frame predictions over neighbouring frames with a box filter (a moving mean), e.g.
A. V. Savchenko, "EmotiEffNet Facial Features in Uni-task Emotion Recognition in Video at
ABAW-5 competition" (CVPR workshops 2023, arXiv:2303.09162), and "Smoothing Predictions of
Multi-Task EmotiNet Models for Compound Facial Expression Recognition" (ECCV workshops 2024,
ABAW-7), where smoothing with box filters is the step that helped most. A mean, unlike a
median, keeps the trace continuous and is exact to check.

Why 1 s by default (``DEFAULT_WINDOW_S``): the Aff-Wild2 labels themselves are median-filtered
per annotator over 30 frames, 1 s at 30 fps, the largest of the sizes the paper tried (5, 15,
30 frames; section "Data annotation"), because it gave the best inter-annotator agreement.
Predictions smoothed over the same span vary on the labels' own time scale.

The rule, per video and per track: the smoothed value at output frame k is the mean of the
track's values at the frames within ``half`` frames of k, ``half = round(fps * window / 2)``
(a window of ``2 * half + 1`` frames, the frame rate being the traces' own: 30, or the video's
native rate). Frames without the track's face take no part and stay null, so values are never
mixed across a gap longer than the window (a gap of more than ``half`` frames is never
bridged), nor across tracks or videos. The frame rate comes from the traces' ``time_s``; for a
variable-frame-rate video at ``--fps native`` the window is in frames at its median rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from affbatch.errors import UsageError

#: What ``--smooth`` does, as written into the metadata of what it writes.
SMOOTHING_METHOD = "centred moving mean per track (box filter)"
#: The default window: the 30-frame (1 s at 30 fps) median filter of the Aff-Wild2 labels.
DEFAULT_WINDOW_S = 1.0
#: Longer than this is not smoothing any more (a typical Aff-Wild2 video lasts minutes).
MAX_WINDOW_S = 60.0


@dataclass(frozen=True)
class Smoothing:
    """A ``--smooth`` setting: the window in seconds."""

    window_s: float = DEFAULT_WINDOW_S

    def __post_init__(self) -> None:
        w = self.window_s
        if not isinstance(w, (int, float)) or not np.isfinite(w) or not 0 < w <= MAX_WINDOW_S:
            raise UsageError(f"--smooth {w!r}: expected a window in seconds, above 0 and at most {MAX_WINDOW_S:g}")

    def half_frames(self, fps: float) -> int:
        """Frames on each side of the centre at ``fps``."""
        return int(round(fps * self.window_s / 2))

    def metadata(self) -> dict:
        return {
            "method": SMOOTHING_METHOD,
            "window_s": self.window_s,
            "frames": "2 * round(fps * window_s / 2) + 1, centred; frames without the face take no part",
        }


def moving_mean(frame: np.ndarray, values: np.ndarray, half: int) -> np.ndarray:
    """Centred moving mean of one track's values.

    Args:
        frame: int (n,) ascending output frame indices of the track, each at most once.
        values: float (n,) or (n, d), finite.
        half: frames on each side.

    Returns:
        float64 like ``values``: at each frame, the mean of the values at frames within ``half``.
    """
    frame = np.asarray(frame, np.int64)
    v = np.asarray(values, np.float64)
    if len(frame) and np.any(np.diff(frame) <= 0):
        raise ValueError("moving_mean needs strictly ascending frames")
    if len(frame) == 0:
        return v.copy()
    # The track on a dense timeline padded by ``half`` on each side, summed over the 2*half+1
    # shifts in order: exact for integers, the identity for half 0, and no running-sum error
    # that grows with the length of the video.
    at = frame - frame[0] + half
    dense = np.zeros((int(at[-1]) + half + 1, *v.shape[1:]))
    present = np.zeros(len(dense))
    dense[at], present[at] = v, 1.0
    total = np.zeros_like(v)
    count = np.zeros(len(frame))
    for shift in range(-half, half + 1):
        total += dense[at + shift]
        count += present[at + shift]
    return total / count.reshape(-1, *([1] * (v.ndim - 1)))


def frame_rate(time_s: np.ndarray, frame: np.ndarray) -> float | None:
    """Frames per second of one video's traces: one over the median step of ``time_s`` per frame."""
    order = np.unique(np.asarray(frame, np.int64), return_index=True)[1]
    t = np.asarray(time_s, np.float64)[order]
    f = np.asarray(frame, np.int64)[order]
    if len(f) < 2:
        return None
    step = np.median(np.diff(t) / np.diff(f))
    return float(1 / step) if step > 0 else None


def smooth_table(table: pa.Table, smoothing: Smoothing) -> pa.Table:
    """The traces with valence and arousal smoothed per (video, track); other columns and the
    row order unchanged. Needs ``video, frame, time_s, track, valence, arousal``."""
    n = table.num_rows
    if n == 0:
        return table
    video = pc.dictionary_encode(table["video"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    frame = table["frame"].to_numpy().astype(np.int64)
    time_s = table["time_s"].to_numpy()
    track = pc.fill_null(table["track"], -1).to_numpy()
    va = np.stack(
        [pc.fill_null(table[c].cast(pa.float64()), float("nan")).to_numpy() for c in ("valence", "arousal")], axis=1
    )
    out = va.copy()
    have = (track >= 0) & np.isfinite(va).all(axis=1)
    by_video = np.argsort(video, kind="stable")
    bounds = np.searchsorted(video[by_video], np.arange(int(video.max()) + 2))
    rates = {
        v: frame_rate(time_s[by_video[bounds[v] : bounds[v + 1]]], frame[by_video[bounds[v] : bounds[v + 1]]])
        for v in range(len(bounds) - 1)
    }
    rows = np.flatnonzero(have)
    order = rows[np.lexsort((frame[rows], track[rows], video[rows]))]
    keys = np.stack([video[order], track[order]], axis=1)
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        idx = order[s:e]
        fps = rates[video[idx[0]]]
        half = smoothing.half_frames(fps) if fps else 0
        if np.any(np.diff(frame[idx]) == 0):
            raise ValueError(f"video {table['video'][int(idx[0])]}: track {track[idx[0]]} has two rows in one frame")
        out[idx] = moving_mean(frame[idx], va[idx], half)
    columns = {}
    for j, name in enumerate(("valence", "arousal")):
        kind = table.schema.field(name).type
        columns[name] = pa.array(out[:, j], mask=np.isnan(out[:, j])).cast(kind)
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), column)
    return table
