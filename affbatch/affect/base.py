"""What every analyzer offers (the Protocol the pipeline calls), and the one without models.

An ``Analyzer`` sees a video's wanted source frames batch by batch (while the next batch is
decoded) and, at the end, returns the face rows of every output frame. Importing this module
loads no model library (no torch): ``--model none`` runs without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from affbatch.video.decoders.base import FrameBatch
    from affbatch.video.probe import VideoInfo

#: ``sink(detection, crops)``: the crops of one decoded batch, as the affect model gets them.
#: ``detection``: int64 (k,), the detections' numbers within the video (from 0, in decoding
#: order); ``crops``: float32 (k, 3, 96, 96) RGB in [-1, 1]. The face rows of ``finish`` carry
#: the same numbers in their ``detection`` column.
CropSink = Callable[[np.ndarray, np.ndarray], None]


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
    #: the arithmetic each model ran in (``detector: bf16, affect: bf16 + fp32``): it changes the traces
    precision: str = "none"


class Analyzer(Protocol):
    identity: ModelIdentity

    def start(self, info: VideoInfo, slots: np.ndarray, crop_sink: CropSink | None = None) -> None:
        """A new video begins; ``slots[k]`` is the source frame shown in output frame k.
        ``crop_sink``, if given, receives every face crop of the video (see :data:`CropSink`)."""

    def add(self, batch: FrameBatch) -> None:
        """Frames of the current video, in order."""

    def finish(self, slots: np.ndarray) -> dict[str, np.ndarray] | None:
        """Face rows of the video: ``frame`` (output index), ``detection`` (see
        :data:`CropSink`) and ``traces.FACE_COLUMNS``, sorted by frame then track;
        ``valence``/``arousal`` NaN where no affect model ran. None: no face anywhere."""


class NoFaces:
    """No detector and no affect model: every output frame gets one row of nulls, so the
    traces tell which frames exist and when, and say plainly that no model ran."""

    identity = ModelIdentity(
        model="none",
        model_sha256=None,
        detector="none",
        detector_sha256=None,
        runtime="none",
        device="none",
        description="no detector and no affect model (--model none): face and valence/arousal columns are null",
    )

    def start(self, info: VideoInfo, slots: np.ndarray, crop_sink: CropSink | None = None) -> None:
        pass

    def add(self, batch: FrameBatch) -> None:
        pass

    def finish(self, slots: np.ndarray) -> dict[str, np.ndarray] | None:
        return None
