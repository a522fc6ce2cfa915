"""The decoder interface: turn a probed video into batches of RGB frames.

A batch lives where it was decoded: a host numpy array (PyAV) or a torch tensor on the device
of a GPU decoder (DALI, PyNvVideoCodec). Nothing here imports torch: a tensor can only exist
once something else has.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from affbatch.video.probe import VideoInfo


@dataclass
class FrameBatch:
    """Consecutive decoded source frames of one video, in presentation order.

    Attributes:
        images: uint8 (n, H, W, 3), RGB, turned upright as the display matrix asks (H and W
            are ``VideoInfo.height`` and ``.width``): a numpy array on the host, or a torch
            tensor on any device (``is_tensor``, ``device``), valid until the decoder's next batch
            is asked for (a GPU decoder may reuse its output memory after that).
        source_index: int32 (n,), ascending: position of each frame in the video's
            presentation order (the numbering of Aff-Wild2's label files).
        time_s: float64 (n,), seconds from the video's first frame.
    """

    images: Any  # np.ndarray | torch.Tensor
    source_index: np.ndarray
    time_s: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.is_tensor:
            import torch

            uint8 = self.images.dtype == torch.uint8
        elif isinstance(self.images, np.ndarray):
            uint8 = self.images.dtype == np.uint8
        else:
            raise ValueError(f"images must be a numpy array or a torch tensor, got {type(self.images).__name__}")
        if not uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise ValueError(f"images must be uint8 (n, H, W, 3), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.source_index) != n or len(self.time_s) != n:
            raise ValueError("images, source_index and time_s must have the same length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def is_tensor(self) -> bool:
        """True: ``images`` is a torch tensor (on ``device``); False: a host numpy array."""
        return is_tensor(self.images)

    @property
    def device(self) -> str:
        """Where ``images`` is: ``"cpu"`` for numpy, else the tensor's device (``"cuda:0"``)."""
        return str(self.images.device) if self.is_tensor else "cpu"

    def host_images(self) -> np.ndarray:
        """``images`` as a host numpy array (a copy from a GPU; the array itself from the host)."""
        return self.images.cpu().numpy() if self.is_tensor else self.images


def is_tensor(x: object) -> bool:
    """A torch tensor, told without importing torch (if torch is not loaded, x is not one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


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


class DeviceFrames(Decoder):
    """Another decoder's batches moved to a torch device once, as uint8: everything after the
    decoder (detector, crops, affect model) then runs there. For a host decoder (PyAV) feeding
    models on a GPU; ``device="cpu"`` gives torch CPU tensors (the GPU path's code, on the CPU)."""

    def __init__(self, decoder: Decoder, device: str) -> None:
        self.decoder, self.target = decoder, device
        self.name = decoder.name

    def frames(self, info: VideoInfo, wanted: np.ndarray, batch_size: int) -> Iterator[FrameBatch]:
        import torch

        for batch in self.decoder.frames(info, wanted, batch_size):
            images = batch.images if batch.is_tensor else torch.from_numpy(batch.images)
            # pin_memory + non_blocking would overlap the copy; the decoding thread already does.
            yield FrameBatch(images.to(self.target), batch.source_index, batch.time_s)
