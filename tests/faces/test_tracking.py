"""Face tracks: one id per person across frames, through short misses."""

from __future__ import annotations

import numpy as np

from affbatch.faces.tracking import MAX_GAP_S, FaceTracker, iou


def box(cx, cy, size=60):
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def test_iou():
    a = np.array([box(50, 50, 20)], np.float32)
    b = np.array([box(50, 50, 20), box(60, 50, 20), box(200, 200, 20)], np.float32)
    np.testing.assert_allclose(iou(a, b)[0], [1.0, 1 / 3, 0.0], atol=1e-6)


def test_two_people_keep_their_ids_while_moving():
    tracker = FaceTracker()
    for t in range(90):
        # Listed in alternating order: ids must follow the faces, not the list order.
        faces = [box(100 + 2 * t, 200), box(500 - 2 * t, 210)]
        flip = t % 2 == 1
        ids = tracker.update(t / 30, faces[::-1] if flip else faces)
        assert ids.tolist() == ([1, 0] if flip else [0, 1]), t


def test_five_people_with_jitter_and_missed_detections():
    rng = np.random.default_rng(0)
    centres = [(100, 100), (250, 110), (400, 95), (550, 105), (700, 100)]
    tracker = FaceTracker()
    seen: dict[int, set[int]] = {i: set() for i in range(5)}
    for t in range(150):
        keep = [i for i in range(5) if rng.random() > 0.15]  # 15% missed detections
        faces = [box(centres[i][0] + rng.normal(0, 4), centres[i][1] + rng.normal(0, 4), 70) for i in keep]
        for person, track in zip(keep, tracker.update(t / 30, faces), strict=True):
            seen[person].add(int(track))
    assert all(len(ids) == 1 for ids in seen.values()), seen  # no id switch
    assert len({next(iter(ids)) for ids in seen.values()}) == 5


def test_short_gap_keeps_the_id_long_gap_starts_a_new_track():
    tracker = FaceTracker()
    for t in range(10):
        assert tracker.update(t / 30, [box(100, 100)]).tolist() == [0]
    # Missing for half a second: same person, same id.
    assert tracker.update((10 + 15) / 30, [box(104, 100)]).tolist() == [0]
    # Missing for longer than MAX_GAP_S: a new track.
    assert tracker.update((25 / 30) + MAX_GAP_S + 0.1, [box(104, 100)]).tolist() == [1]


def test_fast_motion_links_by_centre_distance():
    tracker = FaceTracker()
    ids = [tracker.update(t / 30, [box(100 + 25 * t, 100)])[0] for t in range(20)]
    assert set(ids) == {0}  # 25 px per frame with a 60 px box: little overlap, same face


def test_spurious_detections_are_dropped():
    tracker = FaceTracker()
    for t in range(30):
        faces = [box(100, 100)] + ([box(400, 300, 30)] if t == 7 else [])
        tracker.update(t / 30, faces)
    assert tracker.kept_ids() == {0}


def test_empty_frames():
    tracker = FaceTracker()
    assert tracker.update(0.0, np.zeros((0, 4))).tolist() == []
    assert tracker.update(0.1, [box(10, 10)]).tolist() == [0]
