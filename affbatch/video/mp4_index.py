"""Where an MP4/MOV index ('moov' sample tables) says each frame's data lies.

Every sample's bytes are placed by its track's sample table: chunk offsets ('stco'/'co64'),
samples per chunk ('stsc') and sample sizes ('stsz'/'stz2'). A file whose index is whole but
whose data ends before the extent those tables give was cut short (a faststart file, index
first, cut anywhere in its frames), however its top-level boxes look: the cut can fall right
after the index, before the header of the box that holds the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Boxes on the way from 'moov' to a sample table; the rest are skipped.
_CONTAINERS = frozenset({b"trak", b"mdia", b"minf", b"stbl"})
_TABLES = frozenset({b"hdlr", b"stsz", b"stz2", b"stsc", b"stco", b"co64"})

#: An index larger than this is not read (a sample table of hours of video is a few MB).
MAX_INDEX_BYTES = 256 << 20


@dataclass(frozen=True)
class SampleExtent:
    """What the index says about the data of the samples it lists."""

    data_end: int  # the byte after the last sample of any track
    video_samples: int  # samples of the first video track that has any
    video_missing: int  # of them, how many end past the end of the file


def sample_extent(moov: bytes, file_size: int) -> SampleExtent | None:
    """Read the sample tables of a whole 'moov' box's payload; None where it lists no sample
    (a fragmented MP4 keeps them in 'moof' boxes) or cannot be parsed."""
    try:
        tracks = [_track_ends(tables) for tables in _tracks(moov)]
    except (ValueError, IndexError):
        return None
    tracks = [(handler, ends) for handler, ends in tracks if ends is not None and len(ends)]
    if not tracks:
        return None
    data_end = max(int(ends.max()) for _, ends in tracks)
    video = next((ends for handler, ends in tracks if handler == b"vide"), None)
    if video is None:
        return SampleExtent(data_end, 0, 0)
    return SampleExtent(data_end, len(video), int(np.count_nonzero(video > file_size)))


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind, header = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8], 8
        if size == 1:
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError("a box runs past its parent")
        yield kind, pos + header, pos + size
        pos += size


def _tracks(moov: bytes):
    """For each 'trak': {table type: payload bytes} of the boxes in _TABLES."""
    for kind, start, end in _boxes(moov, 0, len(moov)):
        if kind == b"trak":
            tables: dict[bytes, bytes] = {}
            _collect(moov, start, end, tables)
            yield tables


def _collect(data: bytes, start: int, end: int, tables: dict) -> None:
    for kind, s, e in _boxes(data, start, end):
        if kind in _CONTAINERS:
            _collect(data, s, e, tables)
        elif kind in _TABLES:
            tables.setdefault(kind, data[s:e])


def _track_ends(tables: dict) -> tuple[bytes, np.ndarray | None]:
    """(handler type, byte end of each sample) of one track."""
    hdlr = tables.get(b"hdlr", b"")
    handler = hdlr[8:12]  # version/flags, pre_defined, then handler_type
    sizes = _sizes(tables)
    offsets = _chunk_offsets(tables)
    stsc = tables.get(b"stsc")
    if sizes is None or offsets is None or stsc is None or not len(sizes) or not len(offsets):
        return handler, None
    entries = _table(stsc, 3)  # first_chunk (1-based), samples_per_chunk, description index
    per_chunk = np.zeros(len(offsets), np.int64)
    for k, (first, count, _) in enumerate(entries):
        stop = entries[k + 1][0] - 1 if k + 1 < len(entries) else len(offsets)
        per_chunk[max(first - 1, 0) : max(stop, 0)] = count
    through = np.cumsum(per_chunk)  # samples up to the end of each chunk
    sizes = sizes[: int(through[-1])]
    if not len(sizes):
        return handler, None
    chunk = np.searchsorted(through, np.arange(len(sizes)), side="right")
    after = np.cumsum(sizes)  # bytes of the samples up to and including each one
    first_of_chunk = np.searchsorted(chunk, chunk, side="left")  # chunk is sorted
    return handler, offsets[chunk] + after - (after[first_of_chunk] - sizes[first_of_chunk])


def _table(payload: bytes, columns: int, width: int = 4) -> np.ndarray:
    """A full box's entry count and big-endian entries, as rows of ``columns``."""
    count = int.from_bytes(payload[4:8], "big")
    body = payload[8 : 8 + count * columns * width]
    if len(body) < count * columns * width:
        raise ValueError("a table shorter than its count")
    return np.frombuffer(body, f">u{width}").astype(np.int64).reshape(count, columns)


def _sizes(tables: dict) -> np.ndarray | None:
    if b"stsz" in tables:
        payload = tables[b"stsz"]
        uniform, count = int.from_bytes(payload[4:8], "big"), int.from_bytes(payload[8:12], "big")
        if uniform:
            return np.full(count, uniform, np.int64)
        return _table(payload[4:], 1).ravel()
    if b"stz2" in tables:  # compact sizes: 4, 8 or 16 bits each
        payload = tables[b"stz2"]
        bits, count = payload[7], int.from_bytes(payload[8:12], "big")
        if bits == 4:
            packed = np.frombuffer(payload[12 : 12 + (count + 1) // 2], np.uint8)
            return np.stack([packed >> 4, packed & 15], axis=1).ravel()[:count].astype(np.int64)
        if bits in (8, 16):
            body = payload[12 : 12 + count * bits // 8]
            return np.frombuffer(body, f">u{bits // 8}").astype(np.int64)
    return None


def _chunk_offsets(tables: dict) -> np.ndarray | None:
    if b"stco" in tables:
        return _table(tables[b"stco"], 1).ravel()
    if b"co64" in tables:
        return _table(tables[b"co64"], 1, width=8).ravel()
    return None
