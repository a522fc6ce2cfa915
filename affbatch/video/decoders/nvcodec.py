"""PyNvVideoCodec (NVIDIA's successor to VPF): NVDEC decoding straight to GPU memory.

``SimpleDecoder`` with ``output_color_type=RGB`` and ``use_device_memory=True`` gives each frame
as interleaved RGB (H, W, 3) uint8 in device memory, handed to torch by DLPack. One decoder per
instance (per worker), created on the first video and moved to the next ones with
``reconfigure_decoder`` (PyNvVideoCodec's decoder cache: no new NVDEC session per video).

Frames are decoded sequentially from the start, in presentation order, and numbered by
counting them (as the codec must decode every frame anyway; wanted frames are copied into the
batch, the others dropped on the device). The count must come out at the probe's number of
frames: a decoder that drops or adds frames would shift the numbering, so the video then fails
with that reason instead of getting misnumbered traces. Rotation is applied on the device as
the PyAV backend applies it.

This backend needs an NVIDIA GPU and the ``gpu`` extra (``pip install 'affbatch[gpu]'``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from affbatch.errors import DecodeFailure, UsageError
from affbatch.video.decoders.base import Decoder, FrameBatch, SideStream
from affbatch.video.decoders.dali import cuda_index
from affbatch.video.probe import VideoInfo

#: Codecs NVDEC decodes on current GPUs (Turing and later); PyNvVideoCodec's demuxer is FFmpeg's.
CODECS = ("h264", "hevc", "av1", "vp8", "vp9", "mpeg4", "mpeg2video", "mjpeg")
#: Frames asked of the decoder per call.
STEP = 16


class NvCodecDecoder(Decoder):
    name = "nvcodec"

    def __init__(self, device: str = "cuda:0") -> None:
        index = cuda_index(device)
        if index is None:
            raise UsageError("--decoder nvcodec decodes on an NVIDIA GPU: give --device cuda (or use pyav)")
        try:
            import PyNvVideoCodec  # noqa: F401
        except ImportError:
            raise UsageError("--decoder nvcodec needs PyNvVideoCodec: pip install 'affbatch[gpu]'") from None
        except Exception as exc:  # its import loads the driver's libraries: RuntimeError without them
            raise UsageError(f"--decoder nvcodec: PyNvVideoCodec cannot load: {first_line(exc)}") from None
        self.gpu_id = index
        self.device = f"cuda:{index}"
        self.side = SideStream(self.device)
        self._decoder = None

    def supports(self, info: VideoInfo) -> str | None:
        """None when NVDEC can decode ``info``, else why not (one line)."""
        if info.codec not in CODECS:
            return f"NVDEC does not decode {info.codec} (use --decoder pyav or auto)"
        return None

    def frames(self, info: VideoInfo, wanted: np.ndarray, batch_size: int) -> Iterator[FrameBatch]:
        import torch

        if why := self.supports(info):
            raise DecodeFailure(f"{info.path}: {why}")
        wanted = np.asarray(wanted, np.int64)
        if len(wanted) == 0:
            return
        decoder = self._open(info)
        times = info.times_s()
        quarter_turns = info.rotation // 90
        coded = (info.width, info.height) if quarter_turns % 2 == 0 else (info.height, info.width)
        is_wanted = np.zeros(info.frames, bool)
        is_wanted[wanted] = True
        shape = (min(batch_size, len(wanted)), info.height, info.width, 3)
        with self.side:
            buf = torch.empty(shape, dtype=torch.uint8, device=self.device)
        idx: list[int] = []
        counted = 0
        while True:
            try:
                decoded = decoder.get_batch_frames(STEP)
            except Exception as exc:  # PyNvVideoCodec raises plain Exception/RuntimeError
                self._decoder = None
                raise DecodeFailure(f"{info.path}: NVDEC could not decode it: {first_line(exc)}") from None
            if not decoded:
                break
            for frame in decoded:
                i = counted
                counted += 1
                if i >= info.frames or not is_wanted[i]:
                    continue
                with self.side:  # overlaps the models' kernels on the default stream
                    # (H, W, 3) uint8 on the GPU, valid until the next call; DLPack makes the
                    # side stream wait for the decoder's conversion.
                    image = torch.from_dlpack(frame)
                    if tuple(image.shape) != (coded[1], coded[0], 3):
                        raise DecodeFailure(
                            f"{info.path}: frame {i} is {image.shape[1]}x{image.shape[0]}, "
                            f"the video is {coded[0]}x{coded[1]} (size changes mid-stream are not supported)"
                        )
                    if quarter_turns:
                        image = torch.rot90(image, quarter_turns, dims=(0, 1))
                    buf[len(idx)].copy_(image)
                idx.append(i)
                if len(idx) == len(buf):
                    yield self._batch(self.side.hand_over(buf), idx, times)
                    idx = []
                    with self.side:
                        buf = torch.empty_like(buf)
        if idx:
            yield self._batch(self.side.hand_over(buf[: len(idx)]), idx, times)
        if counted != info.frames:
            raise DecodeFailure(
                f"{info.path}: NVDEC gave {counted} frames, demuxing found {info.frames} "
                "(the numbering would not hold; use --decoder pyav)"
            )

    def _open(self, info: VideoInfo):
        import PyNvVideoCodec as nvc

        path = str(info.path)
        try:
            if self._decoder is None:
                self._decoder = nvc.SimpleDecoder(
                    path,
                    gpu_id=self.gpu_id,
                    use_device_memory=True,
                    output_color_type=nvc.OutputColorType.RGB,
                )
            else:  # the decoder cache: no new NVDEC session per video
                self._decoder.reconfigure_decoder(path)
            self._decoder.seek_to_index(0)
        except Exception as exc:
            self._decoder = None
            raise DecodeFailure(f"{info.path}: NVDEC cannot open it: {first_line(exc)}") from None
        return self._decoder

    @staticmethod
    def _batch(buf, idx: list[int], times: np.ndarray) -> FrameBatch:
        source = np.asarray(idx, np.int32)
        return FrameBatch(images=buf, source_index=source, time_s=times[source])


def first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
