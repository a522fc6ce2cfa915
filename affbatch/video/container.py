"""The container's own account of its length, read without FFmpeg.

MP4/MOV boxes, the Matroska/WebM segment and the AVI RIFF chunk each state their size, so a file
cut short (an interrupted download or copy, a recording that never finished) shows it: its
structure announces more bytes than the file has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from affbatch.video.mp4_index import MAX_INDEX_BYTES, sample_extent


@dataclass(frozen=True)
class Layout:
    """What a container's top-level structure says about the file's length, read without FFmpeg.

    MP4/MOV boxes, the Matroska/WebM segment and the AVI RIFF chunk each state their size, so a
    file cut short (an interrupted download or copy, a recording that never finished) shows
    it: its structure announces more bytes than the file has. ``declared`` is None where the
    structure does not tell (another format, or a size written as unknown, as live recorders do).
    """

    kind: str | None  # "MP4", "Matroska", "AVI"; None: a format not checked here
    size: int  # bytes in the file
    declared: int | None = None  # bytes the structure announces
    cut: str | None = None  # the element the file ends inside
    has_index: bool = True  # MP4: a 'moov' box (the index of every frame) is present
    frames_listed: int = 0  # MP4: video frames its index lists (0: not known)
    frames_cut: int = 0  # MP4: of them, how many have data past the end of the file
    #: Matroska: where the last block of the last cluster starts. A demuxer that returned a
    #: packet from there has read all the data, whatever duration a header claims.
    last_block: int | None = None

    @property
    def truncated(self) -> bool:
        return self.declared is not None and self.declared > self.size

    @property
    def complete(self) -> bool:
        """Known to hold every byte its structure announces."""
        return self.declared is not None and self.declared <= self.size and self.has_index

    def describe(self) -> str:
        """Why the file is incomplete, for a reason; '' when it is not known to be."""
        parts = []
        if self.truncated:
            inside = f", ending inside its '{self.cut}' box" if self.cut else ""
            parts.append(
                f"the file has {self.size} of the {self.declared} bytes its {self.kind} structure announces{inside}"
            )
            if self.frames_cut:
                parts.append(
                    f"the data of {self.frames_cut} of the {self.frames_listed} frames its index lists is cut off"
                )
        if not self.has_index:
            parts.append("it has no 'moov' box, the index of the frames that MP4 writers add when they finish")
        return "; ".join(parts)


#: Boxes that may open an MP4/MOV file (older QuickTime files have no 'ftyp').
_MP4_FIRST_BOXES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_MATROSKA_SEGMENT = 0x18538067


def container_layout(path: Path) -> Layout:
    """Read the top-level structure of ``path`` (a few small reads). Never raises on bad data:
    what cannot be parsed is reported as unknown (``kind`` None or ``declared`` None)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4096)
            if head[:4] == _EBML_MAGIC:
                return _matroska_layout(f, head, size)
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                riff = int.from_bytes(head[4:8], "little")
                return Layout("AVI", size, 8 + riff + (riff & 1))
            if head[4:8] in _MP4_FIRST_BOXES:
                return _mp4_layout(f, size)
    except (OSError, ValueError, IndexError):
        pass
    return Layout(None, 0)


def _mp4_layout(f, size: int) -> Layout:
    """Walk the top-level boxes; stop (structure unknown) at anything that is not a box. A whole
    'moov' also tells where the frames' data ends (``mp4_index``): a file cut after its index
    may end before the next box's header, where the boxes alone look complete."""
    pos = 0
    boxes: set[bytes] = set()
    extent = None
    while pos + 8 <= size:
        f.seek(pos)
        head = f.read(16)
        box_size, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if not all(0x20 <= c < 0x7F for c in kind):
            return Layout("MP4", size)  # trailing junk, or not boxes at all: no verdict
        boxes.add(kind)
        header = 8
        if box_size == 0:  # the last box, to the end of the file
            box_size = size - pos
        elif box_size == 1:  # a 64-bit size follows the type
            if len(head) < 16:
                return _mp4_cut(size, pos + 16, kind, boxes, extent)
            box_size, header = int.from_bytes(head[8:16], "big"), 16
        if box_size < header:
            return Layout("MP4", size)
        if pos + box_size > size:
            return _mp4_cut(size, pos + box_size, kind, boxes, extent)
        if kind == b"moov" and extent is None and box_size - header <= MAX_INDEX_BYTES:
            f.seek(pos + header)
            extent = sample_extent(f.read(box_size - header), size)
        pos += box_size
    return _mp4_cut(size, size, None, boxes, extent)


def _mp4_cut(size: int, declared: int, kind: bytes | None, boxes: set[bytes], extent) -> Layout:
    """The layout of an MP4 whose top-level boxes announce ``declared`` bytes, ending inside
    box ``kind`` (None: not inside any), and whose index places its frames' data by ``extent``."""
    listed = cut_frames = 0
    if extent is not None:
        listed, cut_frames = extent.video_samples, extent.video_missing
        if extent.data_end > declared:
            declared, kind = extent.data_end, kind or b"mdat"
    return Layout(
        "MP4",
        size,
        declared,
        cut=kind.decode("ascii") if kind and declared > size else None,
        has_index=bool(boxes & {b"moov", b"moof"}),
        frames_listed=listed,
        frames_cut=cut_frames,
    )


def _matroska_layout(f, head: bytes, size: int) -> Layout:
    """The EBML header, then the Segment: its size says where the file ends."""
    pos = 4
    header_size, pos, _ = _ebml_vint(head, pos)
    pos += header_size
    element, pos, _ = _ebml_vint(head, pos, keep_marker=True)
    if element != _MATROSKA_SEGMENT:
        return Layout("Matroska", size)
    segment_size, pos, unknown = _ebml_vint(head, pos)
    end = size if unknown else min(pos + segment_size, size)
    last_block = _last_child(f, _last_child(f, (pos, end), _MATROSKA_CLUSTER), _MATROSKA_BLOCKS, start=True)
    if unknown:  # streamed: the writer did not know the size
        return Layout("Matroska", size, last_block=last_block)
    return Layout("Matroska", size, pos + segment_size, last_block=last_block)


_MATROSKA_CLUSTER = frozenset({0x1F43B675})
_MATROSKA_BLOCKS = frozenset({0xA3, 0xA0})  # SimpleBlock, BlockGroup

#: Elements walked at most when looking for the last cluster (a few per minute of video).
_MAX_ELEMENTS = 1_000_000


def _last_child(f, span, ids: frozenset[int], start: bool = False):
    """Walk the EBML elements in ``span`` (start, end): the (data start, end) of the last one
    whose ID is in ``ids``, or with ``start`` the position of its ID. None where the walk
    breaks (an element of unknown size, damaged structure) or finds none."""
    if span is None:
        return None
    pos, end = span
    found = None
    for _ in range(_MAX_ELEMENTS):
        if pos >= end:
            return found
        f.seek(pos)
        head = f.read(16)
        try:
            element, data, _ = _ebml_vint(head, 0, keep_marker=True)
            length, data, unknown = _ebml_vint(head, data)
        except (ValueError, IndexError):
            return None
        if unknown or pos + data + length > end:
            return None
        if element in ids:
            found = pos if start else (pos + data, pos + data + length)
        pos += data + length
    return None


def _ebml_vint(data: bytes, pos: int, keep_marker: bool = False) -> tuple[int, int, bool]:
    """(value, position after it, all value bits set: "unknown size") of an EBML varint."""
    first = data[pos]
    if first == 0:
        raise ValueError("not an EBML varint")
    length = 9 - first.bit_length()
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    if pos + length > len(data):
        raise ValueError("EBML varint past the data")
    unknown = not keep_marker and value == (1 << (7 * length)) - 1
    return value, pos + length, unknown
