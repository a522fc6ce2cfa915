"""NVIDIA DALI decoding: NVDEC on a GPU (``device="mixed"``), libavcodec on the CPU.

The file's bytes go through ``fn.external_source`` into ``fn.decoders.video``, with ``frames=``
the wanted source indices (a second external source, so one pipeline serves every video: it is
built once per decoder, that is once per worker, and reused). The selection is the one computed
from timestamps by demuxing (``video.framerate``); indices are unique (a source frame shown in
two output frames is decoded once and repeated downstream: DALI would seek back and re-decode
its GOP for a repeated index). A pipeline run decodes a chunk of the wanted frames (bounded in
bytes, ``RUN_BYTES``); its output is handed to torch by DLPack and copied out of DALI's buffer on
the device before the next run may reuse it. On a GPU the batches are CUDA tensors; on the CPU,
numpy arrays (the host path).

What DALI does not do, done here: rotation (the display matrix; DALI ignores it) is applied on
the device as the PyAV backend applies it; packets with a negative timestamp are skipped by
DALI's frame index, so its frame k is our source frame k + (number of negative timestamps).
Since DALI 2.1.1 the CPU backend decodes only VP8, VP9 and MJPEG: other codecs fail per file
with a reason naming what works. A file DALI cannot decode fails alone (``DecodeFailure``) and
the pipeline is rebuilt for the next one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from affbatch.errors import DecodeFailure, UsageError
from affbatch.video.decoders.base import Decoder, FrameBatch, SideStream
from affbatch.video.probe import VideoInfo

#: Codecs DALI's CPU backend decodes (its documentation for ``fn.decoders.video``, DALI >= 2.1.1).
CPU_CODECS = ("vp8", "vp9", "mjpeg")
#: Codecs its mixed (NVDEC) backend decodes.
GPU_CODECS = ("h264", "hevc", "av1", "mpeg4", *CPU_CODECS)
#: Decoded bytes per pipeline run (at least one batch): bounds device memory for any frame size
#: while keeping runs long (each run re-opens the file and seeks to a key frame).
RUN_BYTES = 1 << 30


def cuda_index(device: str) -> int | None:
    """``"cuda:1"`` -> 1, ``"cuda"`` -> 0, ``"cpu"`` -> None."""
    if not device.startswith("cuda"):
        return None
    _, _, index = device.partition(":")
    return int(index or 0)


class DaliDecoder(Decoder):
    name = "dali"

    def __init__(self, device: str = "cpu", threads: int = 2) -> None:
        try:
            import nvidia.dali  # noqa: F401
        except ImportError:
            raise UsageError("--decoder dali needs NVIDIA DALI: pip install 'affbatch[gpu]'") from None
        except Exception as exc:  # a broken install: say so in one line
            raise UsageError(f"--decoder dali: DALI cannot load: {dali_reason(exc)}") from None
        self.device_id = cuda_index(device)
        #: "mixed" (NVDEC, frames on the GPU) or "cpu" (libavcodec, host frames).
        self.backend = "cpu" if self.device_id is None else "mixed"
        self.threads = threads
        self.side = SideStream(device if self.device_id is not None else "cpu")
        self._pipeline = None

    def supports(self, info: VideoInfo) -> str | None:
        """None when this backend can decode ``info``'s codec, else why not (one line)."""
        codecs = CPU_CODECS if self.backend == "cpu" else GPU_CODECS
        if info.codec in codecs:
            return None
        if self.backend == "cpu" and info.codec in GPU_CODECS:
            return (
                f"DALI decodes {info.codec} only on a GPU; on the CPU it takes VP8, VP9 and MJPEG "
                "(use --decoder pyav or auto, or a CUDA --device)"
            )
        return f"DALI does not decode {info.codec} (use --decoder pyav or auto)"

    def frames(self, info: VideoInfo, wanted: np.ndarray, batch_size: int) -> Iterator[FrameBatch]:
        import torch

        if why := self.supports(info):
            raise DecodeFailure(f"{info.path}: {why}")
        wanted = np.asarray(wanted, np.int64)
        if len(wanted) == 0:
            return
        skipped = int((info.pts < 0).sum())
        if wanted[0] < skipped:
            raise DecodeFailure(
                f"{info.path}: its first {skipped} frames have negative timestamps, which DALI skips "
                "(use --decoder pyav or auto)"
            )
        data = np.fromfile(info.path, np.uint8)
        times = info.times_s()
        quarter_turns = info.rotation // 90
        per_frame = info.width * info.height * 3
        run = max(batch_size, (RUN_BYTES // per_frame) // batch_size * batch_size)
        for start in range(0, len(wanted), run):
            chunk = wanted[start : start + run]
            with self.side:  # device work overlaps the models' kernels on the default stream
                decoded = self._run(info, data, chunk - skipped)
                if quarter_turns:
                    decoded = torch.rot90(decoded, quarter_turns, dims=(1, 2))
            if tuple(decoded.shape[1:]) != (info.height, info.width, 3):
                raise DecodeFailure(
                    f"{info.path}: DALI gave {decoded.shape[2]}x{decoded.shape[1]} frames, "
                    f"the video is {info.width}x{info.height}"
                )
            for b in range(0, len(chunk), batch_size):
                # A copy: DALI may reuse its output memory at the next run, while the analysis
                # still holds this batch (decoding runs ahead).
                with self.side:
                    images = decoded[b : b + batch_size].clone(memory_format=torch.contiguous_format)
                source = chunk[b : b + batch_size].astype(np.int32)
                images = images.numpy() if self.backend == "cpu" else self.side.hand_over(images)
                yield FrameBatch(images=images, source_index=source, time_s=times[source])

    def _run(self, info: VideoInfo, data: np.ndarray, indices: np.ndarray):
        import torch

        pipeline = self._pipeline or self._build()
        try:
            pipeline.feed_input("encoded", [data])
            pipeline.feed_input("frames", [indices.astype(np.int32)])
            (out,) = pipeline.run()
            decoded = torch.from_dlpack(out[0])  # the one sample (F, H, W, 3), on the GPU for mixed
        except RuntimeError as exc:
            self._pipeline = None  # DALI says the pipeline is no longer valid after an error
            raise DecodeFailure(f"{info.path}: DALI could not decode it: {dali_reason(exc)}") from None
        if len(decoded) != len(indices):
            raise DecodeFailure(f"{info.path}: DALI gave {len(decoded)} of the {len(indices)} frames asked for")
        return decoded

    def _build(self):
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def

        backend = self.backend

        @pipeline_def(
            batch_size=1,
            num_threads=self.threads,
            device_id=self.device_id,
            exec_dynamic=True,  # outputs handed over by DLPack (the torch plugin's way)
            prefetch_queue_depth=1,  # inputs are fed one run at a time
        )
        def pipeline():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1, device="cpu")
            frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1, device="cpu")
            return fn.decoders.video(encoded, frames=frames, device=backend)

        built = pipeline()
        built.build()
        self._pipeline = built
        return built


def dali_reason(exc: Exception) -> str:
    """The one line of DALI's multi-line error that says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "failed:" in line:
            return line.split("failed:", 1)[1].strip()
    for line in lines:
        if not line.startswith(("Critical error", "Error in", "which was used", "File ", "return ", "encountered")):
            return line
    return lines[0] if lines else type(exc).__name__
