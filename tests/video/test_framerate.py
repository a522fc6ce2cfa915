"""The fps filter replay, on timestamps worked out by hand."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from affbatch.video.framerate import end_pts, ffmpeg_input_offset, file_start_us, fps_filter_slots, rescale_near_inf


@pytest.mark.parametrize(
    ("value", "src", "dst", "expected"),
    [
        (1, F(1, 60), F(1, 30), 1),  # 0.5 slot: halves go away from zero
        (3, F(1, 60), F(1, 30), 2),  # 1.5 -> 2
        (-1, F(1, 60), F(1, 30), -1),  # -0.5 -> -1
        (-3, F(1, 60), F(1, 30), -2),
        (4, F(1, 25), F(1, 30), 5),  # 4.8 -> 5
        (3, F(1, 25), F(1, 30), 4),  # 3.6 -> 4
        (2, F(1, 25), F(1, 30), 2),  # 2.4 -> 2
        (1001, F(1, 30000), F(1, 30), 1),  # 1.001 -> 1
        (0, F(1, 90000), F(1, 30), 0),
    ],
)
def test_rescale_rounds_to_nearest_halves_away_from_zero(value, src, dst, expected):
    assert rescale_near_inf(value, src, dst) == expected


def test_25_to_30_duplicates_every_fifth_frame():
    # pts 0..9 at 25 fps round to slots 0,1,2,4,5,6,7,8,10,11; the end (10/25 s) is slot 12.
    slots = fps_filter_slots(list(range(10)), F(1, 25), eof_pts=10)
    assert slots.tolist() == [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9]


def test_60_to_30_keeps_every_other_frame():
    # pts i/60 round to slots 0,1,1,2,2,3,3,4,4,5 (halves up): the later frame of a pair wins.
    slots = fps_filter_slots(list(range(10)), F(1, 60), eof_pts=10)
    assert slots.tolist() == [0, 2, 4, 6, 8]


def test_24_to_30():
    slots = fps_filter_slots(list(range(7)), F(1, 24), eof_pts=7)
    assert slots.tolist() == [0, 1, 1, 2, 3, 4, 5, 5, 6]


def test_end_of_stream_before_the_last_slot_drops_the_last_frame():
    # The last frame rounds to slot 2 and the end is also slot 2: it is never shown.
    slots = fps_filter_slots([0, 1, 2], F(1, 30), eof_pts=2)
    assert slots.tolist() == [0, 1]


def test_gap_repeats_the_frame_before_it():
    slots = fps_filter_slots([0, 1, 5], F(1, 30), eof_pts=6)
    assert slots.tolist() == [0, 1, 1, 1, 1, 2]


def test_first_slot_is_the_first_frame_even_when_late():
    # A video starting at 1 s: output frame 0 is its first frame, not 30 empty slots.
    slots = fps_filter_slots([30, 31, 32], F(1, 30), eof_pts=33)
    assert slots.tolist() == [0, 1, 2]


def test_empty():
    assert fps_filter_slots([], F(1, 30), eof_pts=0).tolist() == []


def test_end_pts_adds_the_last_packet_duration_through_microseconds():
    assert end_pts(9, 1, F(1, 25), F(25)) == 10
    # Without a packet duration: one frame at the decoder's rate, in whole microseconds.
    assert end_pts(90000, 0, F(1, 90000), F(30000, 1001)) == 90000 + 3003
    assert end_pts(90000, 0, F(1, 90000), None) == 90000


def test_file_start_is_the_earliest_media_stream():
    starts = [(100, F(1, 1000), "video"), (-21, F(1, 1000), "audio")]
    assert file_start_us(starts) == -21000
    assert ffmpeg_input_offset(-21000, F(1, 1000)) == 21


def test_subtitles_count_only_within_a_second_before():
    media = (0, F(1, 1000), "video")
    assert file_start_us([media, (-500, F(1, 1000), "subtitle")]) == -500_000
    assert file_start_us([media, (-5000, F(1, 1000), "subtitle")]) == 0
    assert file_start_us([]) is None
