"""``--decoder auto``: the GPU decoder on a CUDA device, PyAV for what it cannot take.

Which GPU decoder: PyNvVideoCodec first, then DALI. Why: both run NVDEC, but PyNvVideoCodec
decodes a video sequentially in one session (kept across videos by its decoder cache), while
DALI's ``fn.decoders.video`` re-opens the file and seeks to a key frame on every pipeline run
(``decoders.dali``); users report PyNvVideoCodec faster for sequential decoding, and it is the
one whose wheel travels to the GPU check's machine. ``python -m bench gpu`` measures both where
a GPU is at hand (not measured by this session: it had none).

Fallback to PyAV, per file, logged once per run and recorded in the traces' metadata
(``decoder_fallbacks``, via the Scorer): a codec, pixel format or size NVDEC does not take
(``unsupported``), or a GPU decoder that fails on a file before giving any frame. On the CPU,
``auto`` is PyAV (DALI's CPU backend takes only VP8/VP9/MJPEG and is not faster than FFmpeg).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

from affbatch.errors import DecodeFailure, UsageError
from affbatch.video.decoders.base import Decoder, DeviceFrames, FrameBatch
from affbatch.video.probe import VideoInfo, open_container

log = logging.getLogger(__name__)

#: GPU decoders in the order ``auto`` prefers them (see the module docstring for why).
PREFERENCE = ("nvcodec", "dali")
#: NVDEC's limits (NVIDIA Video Codec SDK support matrix, Turing and later): pixel formats it
#: decodes per codec (H.264: 8-bit 4:2:0 only; 4:4:4 and 10-bit H.264 are not decoded), and the
#: largest side.
NVDEC_PIX_FMTS = {
    "h264": ("yuv420p", "yuvj420p"),
    "hevc": ("yuv420p", "yuvj420p", "yuv420p10le", "yuv420p12le", "yuv444p", "yuv444p10le", "yuv444p12le"),
    "av1": ("yuv420p", "yuv420p10le"),
    "vp9": ("yuv420p", "yuv420p10le", "yuv420p12le"),
    "vp8": ("yuv420p",),
    "mpeg4": ("yuv420p",),
    "mpeg2video": ("yuv420p",),
    "mjpeg": ("yuvj420p", "yuvj422p", "yuvj444p", "yuv420p", "yuv422p", "yuv444p"),
}
NVDEC_MAX_SIDE = {"h264": 4096, "mpeg4": 2032, "mpeg2video": 4080}
NVDEC_DEFAULT_MAX_SIDE = 8192


def unsupported(info: VideoInfo) -> str | None:
    """Why NVDEC would not take ``info`` (codec, pixel format, size), or None."""
    pix_fmts = NVDEC_PIX_FMTS.get(info.codec)
    if pix_fmts is None:
        return f"NVDEC does not decode {info.codec}"
    with open_container(info.path) as container:
        stream = next(s for s in container.streams if s.index == info.stream_index)
        pix_fmt = stream.codec_context.pix_fmt
    if pix_fmt and pix_fmt not in pix_fmts:
        return f"NVDEC does not decode {info.codec} in {pix_fmt}"
    limit = NVDEC_MAX_SIDE.get(info.codec, NVDEC_DEFAULT_MAX_SIDE)
    if max(info.width, info.height) > limit:
        return f"NVDEC decodes {info.codec} up to {limit} pixels a side, this is {info.width}x{info.height}"
    return None


class AutoDecoder(Decoder):
    """A GPU decoder with PyAV (moved to the GPU) for the files it cannot take.

    ``fallbacks``: path -> reason for each file PyAV decoded instead; the Scorer moves them into
    its metadata. ``choice``: which decoder and why, one line.
    """

    def __init__(self, gpu: Decoder, device: str, choice: str) -> None:
        from affbatch.video.decoders.pyav import PyAVDecoder

        self.gpu, self.choice = gpu, choice
        self.name = gpu.name
        self.fallback = DeviceFrames(PyAVDecoder(), device)
        self.fallbacks: dict[str, str] = {}
        self._logged = False

    def frames(self, info: VideoInfo, wanted: np.ndarray, batch_size: int) -> Iterator[FrameBatch]:
        why = unsupported(info)
        if why is None:
            batches = self.gpu.frames(info, wanted, batch_size)
            try:
                first = next(batches, None)
            except DecodeFailure as exc:  # nothing was handed on yet: PyAV can still take it
                why = f"{self.gpu.name} failed: {exc}"
            else:
                if first is not None:
                    yield first
                    yield from batches
                return
        self._fall_back(info, why)
        yield from self.fallback.frames(info, wanted, batch_size)

    def _fall_back(self, info: VideoInfo, why: str) -> None:
        self.fallbacks[str(info.path)] = why
        if not self._logged:
            log.warning(
                "decoder auto: %s decoded by PyAV instead of %s (%s); further files that fall back "
                "are listed in the traces' metadata (decoder_fallbacks)",
                info.path,
                self.gpu.name,
                why,
            )
            self._logged = True


def auto_decoder(device: str, usable: dict[str, str | None], make: Callable[[str, str], Decoder]) -> Decoder:
    """``--decoder auto`` for frames on ``device``, given ``usable`` (``decoders.availability``
    on that device) and ``make(name, device)`` (``decoders.get_decoder``)."""
    if not device.startswith("cuda"):
        return make("pyav", device)
    passed: list[str] = []  # "name: why not", for the ones before the one chosen
    for name in PREFERENCE:
        if (why := usable.get(name)) is None:
            try:
                gpu = make(name, device)
            except UsageError as exc:  # installed but does not load (no driver library, ...)
                why = str(exc)
            else:
                reason = "; ".join(passed) if passed else "preferred"
                return AutoDecoder(gpu, device, f"{name} ({reason}; PyAV for files it cannot take)")
        passed.append(f"{name}: {why}")
    log.warning("decoder auto: PyAV, frames moved to %s (no GPU decoder: %s)", device, "; ".join(passed))
    return make("pyav", device)
