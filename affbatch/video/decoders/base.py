"""The decoder interface: turn a probed video into batches of RGB frames."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from affbatch.video.probe import VideoInfo


@dataclass
class FrameBatch:
    """Consecutive decoded source frames of one video, in presentation order.

    Attributes:
        images: uint8 (n, H, W, 3), RGB, turned upright as the display matrix asks (H and W
            are ``VideoInfo.height`` and ``.width``).
        source_index: int32 (n,), ascending: position of each frame in the video's
            presentation order (the numbering of Aff-Wild2's label files).
        time_s: float64 (n,), seconds from the video's first frame.
    """

    images: np.ndarray
    source_index: np.ndarray
    time_s: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise ValueError(f"images must be uint8 (n, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if len(self.source_index) != n or len(self.time_s) != n:
            raise ValueError("images, source_index and time_s must have the same length")

    def __len__(self) -> int:
        return len(self.images)


class Decoder(ABC):
    """A decoding backend. One instance may decode many videos, one at a time per call."""

    #: The name given to ``--decoder``.
    name: str = ""

    @abstractmethod
    def frames(self, info: VideoInfo, wanted: np.ndarray, batch_size: int) -> Iterator[FrameBatch]:
        """Decode ``info.path`` and yield the source frames listed in ``wanted``.

        Args:
            info: the probe of the video (timestamps, rotation, display size).
            wanted: int64, ascending and unique source indices to produce. Frames that are not
                wanted are decoded (the codec needs them) but never converted to RGB.
            batch_size: at most this many frames per batch; every batch but the last is full.

        Yields:
            ``FrameBatch`` objects, together covering exactly ``wanted`` in order.

        Raises:
            DecodeFailure: a wanted frame could not be decoded (corrupt or missing data); the
                message names the first such frame and how many there are.
        """
