"""Exceptions a user can meet. Each ``str()`` is one line that names the file and the problem."""

from __future__ import annotations


class AffbatchError(Exception):
    """Base class: an expected failure, reported without a traceback (unless ``--debug``)."""


class UsageError(AffbatchError):
    """Bad arguments or options; the CLI exits with status 2."""


class VideoError(AffbatchError):
    """One video cannot be scored. Recorded as a ``failed`` manifest row; the run goes on."""


class VideoOpenFailure(VideoError):
    """The file is missing, empty, unreadable, or not a container FFmpeg can read."""


class NoVideoStream(VideoError):
    """The container opens but holds no video stream (audio only, subtitles, ...)."""


class TruncatedVideo(VideoError):
    """The file ends before its own header says it should, or its data breaks off."""


class DecodeFailure(VideoError):
    """Frames that demuxing announced could not be decoded."""


class LabelError(AffbatchError):
    """A label file does not follow the Aff-Wild2 format."""
