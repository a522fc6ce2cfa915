"""What runs on the decoded frames of a video: face detection, tracking and the affect model.

An ``Analyzer`` sees a video's wanted source frames batch by batch (while the next batch is
decoded) and, at the end, returns the face rows of every output frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from affbatch.decoders.base import FrameBatch
from affbatch.probe import VideoInfo


@dataclass(frozen=True)
class ModelIdentity:
    """Names and weight hashes recorded in the traces' metadata and in resume keys."""

    model: str
    model_sha256: str | None
    detector: str
    detector_sha256: str | None
    runtime: str
    device: str
    description: str = ""  # one line for the user: which model made the traces


class Analyzer(Protocol):
    identity: ModelIdentity

    def start(self, info: VideoInfo, slots: np.ndarray) -> None:
        """A new video begins; ``slots[k]`` is the source frame shown in output frame k."""

    def add(self, batch: FrameBatch) -> None:
        """Frames of the current video, in order."""

    def finish(self, slots: np.ndarray) -> dict[str, np.ndarray] | None:
        """Face rows of the video: ``frame`` (output index) plus ``traces.FACE_COLUMNS``.

        ``slots[k]`` is the source frame shown in output frame k. None: no face anywhere.
        """


class NoFaces:
    """No detector and no affect model: every output frame gets one row of nulls.

    The face and affect models plug in here (``affbatch/models/``); until then traces tell
    which frames exist and when, and say plainly that no model ran.
    """

    identity = ModelIdentity(
        model="none",
        model_sha256=None,
        detector="none",
        detector_sha256=None,
        runtime="none",
        device="none",
        description="no detector and no affect model (--model none): face and valence/arousal columns are null",
    )

    def start(self, info: VideoInfo, slots: np.ndarray) -> None:
        pass

    def add(self, batch: FrameBatch) -> None:
        pass

    def finish(self, slots: np.ndarray) -> dict[str, np.ndarray] | None:
        return None
