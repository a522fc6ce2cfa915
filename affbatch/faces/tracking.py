"""Face tracks: detections associated across frames, so each person keeps one id.

Greedy association by a cost that mixes overlap and centre distance, in time order: each
detection of a frame joins the live track it matches best (IoU with the track's last box, or a
centre within a fraction of the box size, for faces that move fast between frames), or starts a
new track. A track survives ``max_gap_s`` seconds without a detection (a turned head, a missed
detection, a hand in front of the face), so short misses do not switch ids. Ids count from 0 in
order of first appearance. Tracks shorter than ``min_frames`` detections are dropped at the end
as spurious (a detector's false positive seldom lasts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Longest gap (seconds) a track survives without a detection.
MAX_GAP_S = 1.0
#: Lowest overlap that links a detection to a track.
MIN_IOU = 0.2
#: A detection whose centre is within this fraction of the track's box size also links.
MAX_CENTRE_SHIFT = 0.5
#: Tracks with fewer detections than this are dropped at the end.
MIN_FRAMES = 3


@dataclass
class _Track:
    id: int
    box: np.ndarray  # last box (4,)
    last_time: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (n,4) and b (m,4) as x1,y1,x2,y2 -> (n,m)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


class FaceTracker:
    """Online tracker for one video. Feed frames in time order; ids are stable within it."""

    def __init__(
        self, max_gap_s: float = MAX_GAP_S, min_iou: float = MIN_IOU, max_centre_shift: float = MAX_CENTRE_SHIFT
    ):
        self.max_gap_s = max_gap_s
        self.min_iou = min_iou
        self.max_centre_shift = max_centre_shift
        self._live: list[_Track] = []
        self._next_id = 0
        self._length: dict[int, int] = {}

    def update(self, time_s: float, boxes: np.ndarray) -> np.ndarray:
        """Assign a track id to each box (k,4) of the frame at ``time_s``; returns int32 (k,)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self._live = [t for t in self._live if time_s - t.last_time <= self.max_gap_s]
        ids = np.full(len(boxes), -1, np.int32)
        if len(boxes) and self._live:
            predicted = np.stack([t.box + t.velocity * (time_s - t.last_time) for t in self._live])
            cost = self._cost(predicted, boxes)
            # Greedy on ascending cost: with a handful of faces per frame it equals the optimal
            # assignment in practice, and it links no detection or track twice.
            taken: set[int] = set()
            for flat in np.argsort(cost, axis=None):
                ti, di = np.unravel_index(flat, cost.shape)
                if not np.isfinite(cost[ti, di]):
                    break
                if ids[di] >= 0 or ti in taken:
                    continue
                taken.add(ti)
                track = self._live[ti]
                ids[di] = track.id
                dt = time_s - track.last_time
                if dt > 0:
                    track.velocity = 0.5 * track.velocity + 0.5 * (boxes[di] - track.box) / dt
                track.box = boxes[di]
                track.last_time = time_s
        for di in np.flatnonzero(ids < 0):
            track = _Track(id=self._next_id, box=boxes[di], last_time=time_s)
            self._live.append(track)
            ids[di] = self._next_id
            self._next_id += 1
        for i in ids.tolist():
            self._length[i] = self._length.get(i, 0) + 1
        return ids

    def _cost(self, tracks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        overlap = iou(tracks, boxes)
        centre_t = (tracks[:, None, :2] + tracks[:, None, 2:]) / 2
        centre_d = (boxes[None, :, :2] + boxes[None, :, 2:]) / 2
        size = np.maximum(tracks[:, None, 2] - tracks[:, None, 0], tracks[:, None, 3] - tracks[:, None, 1])
        shift = np.linalg.norm(centre_t - centre_d, axis=2) / np.maximum(size, 1.0)
        linked = (overlap >= self.min_iou) | (shift <= self.max_centre_shift)
        return np.where(linked, (1.0 - overlap) + shift, np.inf)

    def kept_ids(self, min_frames: int = MIN_FRAMES) -> set[int]:
        """Ids of the tracks long enough to keep."""
        return {i for i, n in self._length.items() if n >= min_frames}
