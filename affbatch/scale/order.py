"""Longest video first, so that a run does not end with one worker on a long video while the
others sit idle (the classic LPT rule: the makespan is at most 4/3 of the best possible).

Durations come from the container's header (no packet is read): opening a file costs a few
milliseconds, where ``probe`` reads every packet's timestamp. A file whose header gives no
duration is placed by its size; one that cannot be opened goes last (it fails quickly anyway).
"""

from __future__ import annotations

from collections.abc import Iterable

import av

from affbatch.files import file_size
from affbatch.video.inputs import InputVideo


def header_duration(video: InputVideo) -> float | None:
    """Seconds of the video stream as the header states them, None if it states none."""
    try:
        with av.open(str(video.path), metadata_errors="ignore") as container:
            streams = container.streams.video
            if streams and streams[0].duration is not None and streams[0].time_base is not None:
                return float(streams[0].duration * streams[0].time_base)
            if container.duration is not None:
                return container.duration / av.time_base
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return None
    return None


def longest_first(videos: Iterable[InputVideo]) -> list[InputVideo]:
    """``videos`` by decreasing header duration; ties and unknowns by decreasing size; the
    input order is kept among equals (a stable sort), so the order is reproducible."""
    videos = list(videos)
    keys = {}
    for video in videos:
        duration = header_duration(video)
        size = file_size(video.path)
        # Unknown durations after known ones: a size says little about a length.
        keys[video.name] = (duration is not None, duration or 0.0, size)
    return sorted(videos, key=lambda v: keys[v.name], reverse=True)
