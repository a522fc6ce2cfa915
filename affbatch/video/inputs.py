"""Turn the PATH arguments of ``affbatch score`` into an ordered list of videos.

Files given by name are always taken (a non-video fails with a reason in the manifest).
Folders are searched recursively: files with a video extension are taken, files with a known
non-video extension are skipped, and anything else is probed with FFmpeg and taken if it holds a
video stream. Order: the arguments' order, then path order inside each folder. A file reached
twice (same device and inode) is taken once, under its first name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import av

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .qt .mkv .webm .avi .mpg .mpeg .m2v .ts .mts .m2ts .vob .flv .f4v .wmv "
    ".asf .3gp .3g2 .ogv .mxf .dv .y4m .h264 .264 .h265 .265 .hevc .ivf .nut".split()
)

#: Extensions that are never videos: skipped in folders without opening them.
NON_VIDEO_EXTENSIONS = frozenset(
    ".txt .csv .tsv .json .jsonl .xml .yaml .yml .md .rst .html .pdf .doc .docx .xls .xlsx "
    ".arrow .parquet .feather .npy .npz .pkl .pt .pth .onnx .safetensors .h5 .hdf5 .ckpt "
    ".jpg .jpeg .png .bmp .tif .tiff .webp .gif .heic .svg .ico .raw .wav .mp3 .m4a .aac "
    ".flac .ogg .opus .wma .aif .aiff .zip .tar .gz .bz2 .xz .7z .rar .py .sh .c .h .js "
    ".css .log .lock .ini .cfg .toml .srt .vtt .ass .sub .idx .db .sqlite .bin .exe .so "
    ".dll .dylib .iso .part .tmp .swp .ds_store".split()
)


@dataclass(frozen=True)
class InputVideo:
    """A video to score: where it is, and the name it has in the outputs."""

    path: Path  # usable to open the file
    name: str  # the ``video`` column: as given, or relative to the folder given


def collect_videos(arguments: list[str | os.PathLike]) -> list[InputVideo]:
    """Expand files and folders into videos, in a stable order, without duplicates.

    Names are the path as given for files, and the path relative to the folder for files found
    in a folder. When two folders give the same relative name, the later ones are prefixed with
    their folder as given, so that every name is unique.

    A path that does not exist is kept (it fails later, with a reason, like any bad video).
    """
    found: list[InputVideo] = []
    seen_files: set[tuple[int, int]] = set()
    seen_names: set[str] = set()

    def add(path: Path, name: str, prefix: str | None = None) -> None:
        try:
            st = path.stat()
            identity = (st.st_dev, st.st_ino)
        except OSError:
            identity = None
        if identity is not None:
            if identity in seen_files:
                return
            seen_files.add(identity)
        if name in seen_names and prefix is not None:
            name = f"{prefix.rstrip('/')}/{name}"
        if name in seen_names:
            return  # the very same name given twice
        seen_names.add(name)
        found.append(InputVideo(path=path, name=name))

    for argument in arguments:
        given = Path(argument)
        if given.is_dir():
            for relative in _walk(given):
                add(given / relative, relative.as_posix(), prefix=os.fspath(argument))
        else:
            add(given, os.fspath(argument))
    return found


def _walk(folder: Path) -> list[Path]:
    """Video files below ``folder``, as paths relative to it, in sorted order (links followed
    to files, not to folders, so that a link cycle cannot loop)."""
    out: list[Path] = []
    for root, dirs, files in os.walk(folder, onerror=_warn_walk):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for filename in sorted(files):
            if filename.startswith("."):
                continue
            path = Path(root) / filename
            if is_video_file(path):
                out.append(path.relative_to(folder))
    return sorted(out, key=lambda p: p.parts)


def _warn_walk(error: OSError) -> None:
    log.warning("cannot list %s: %s", error.filename, error.strerror)


def is_video_file(path: Path) -> bool:
    """By extension, else by asking FFmpeg whether it holds a video stream."""
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return True
    if ext in NON_VIDEO_EXTENSIONS or not path.is_file():
        return False
    try:
        if path.stat().st_size == 0:
            return False
        with av.open(str(path), metadata_errors="ignore") as container:
            return (
                any(not s.disposition & av.stream.Disposition.attached_pic for s in container.streams.video)
                and container.format.name not in IMAGE_FORMATS
            )
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        log.debug("skipping %s: not a video", path)
        return False


#: FFmpeg opens still images as one-frame "videos": pictures are not videos, in a folder (skipped)
#: or named on the command line (failed, "an image, not a video"; see ``probe``).
IMAGE_FORMATS = frozenset(
    "image2 png_pipe jpeg_pipe bmp_pipe gif gif_pipe tiff_pipe webp_pipe svg_pipe ppm_pipe "
    "pgm_pipe pam_pipe qoi_pipe jpegxl_pipe".split()
)
