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


class SideStream:
    """The decoding thread's device work (copies, rotation) on a CUDA stream of its own, so that
    it overlaps the models' kernels on the default stream instead of queueing behind them.

    ``with side:`` runs torch work on the stream; ``side.hand_over(t)`` waits for that work,
    then marks ``t`` as used by the default stream (so the caching allocator does not reuse its
    memory while kernels queued there still read it) and returns it, ready for the analysis.
    On the CPU both are no-ops.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._stream = None
        self._context = None

    def __enter__(self) -> SideStream:
        if self.device.startswith("cuda"):
            import torch

            if self._stream is None:
                self._stream = torch.cuda.Stream(torch.device(self.device))
            self._context = torch.cuda.stream(self._stream)
            self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)
            self._context = None

    def hand_over(self, tensor):
        if self._stream is not None and getattr(tensor, "is_cuda", False):
            import torch

            self._stream.synchronize()
            tensor.record_stream(torch.cuda.default_stream(tensor.device))
        return tensor


class DeviceFrames(Decoder):
    """Another decoder's batches moved to a torch device once, as uint8: everything after the
    decoder (detector, crops, affect model) then runs there. For a host decoder (PyAV) feeding
    models on a GPU; ``device="cpu"`` gives torch CPU tensors (the GPU path's code, on the CPU)."""

    def __init__(self, decoder: Decoder, device: str) -> None:
        self.decoder, self.target = decoder, device
        self.name = decoder.name
        self.side = SideStream(device)

    def frames(self, info: VideoInfo, wanted: np.ndarray, batch_size: int) -> Iterator[FrameBatch]:
        import torch

        for batch in self.decoder.frames(info, wanted, batch_size):
            images = batch.images if batch.is_tensor else torch.from_numpy(batch.images)
            with self.side:  # the upload overlaps the models' work on the previous batch
                images = images.to(self.target)
            yield FrameBatch(self.side.hand_over(images), batch.source_index, batch.time_s)
