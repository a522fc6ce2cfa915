"""Frames as torch tensors, as a GPU decoder gives them, through the whole pipeline.

On this CPU machine the tensors are CPU tensors: the code path is the GPU one (detector pre- and
post-processing in torch on the batch's device, ``crop_faces_batched``, features and windows as
tensors, only boxes and valence/arousal to the host). Its traces must be the numpy path's:
boxes within ``BOX_PX`` pixels, valence/arousal within ``VA``. The same check on CUDA is marked
``gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affbatch.pipeline import Scorer
from affbatch.video.decoders import DeviceFrames, FrameBatch
from tests.support.face_media import portraits, write_rgb_clip

#: The issue's parity bounds: boxes in source pixels, valence/arousal in [-1, 1] units.
BOX_PX = 1e-3
VA = 1e-4


def two_face_clip(path, frames: int = 36, fps: int = 25, width: int = 320, height: int = 180):
    """Two real faces drifting apart on a gradient (25 fps: at 30 fps some frames repeat)."""
    people = portraits(100)[:2]

    def images():
        for k in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = np.linspace(60, 160, width, dtype=np.uint8)[None, :, None]
            image[40:140, 20 + k // 3 : 120 + k // 3] = people[0]
            image[40:140, 190 - k // 3 : 290 - k // 3] = people[1]
            yield image

    return write_rgb_clip(path, images(), fps)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return two_face_clip(tmp_path_factory.mktemp("device") / "two.mp4")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from affbatch.models.checkpoint import save_checkpoint
    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("init") / "init"
    save_checkpoint(VGGFaceGRUAttention(), folder, trained=False)
    return folder


def traces(clip, model: str, runtime: str, device_frames: str | None, align: bool = False, device: str = "cpu"):
    scorer = Scorer(
        model=model, runtime=runtime, device=device, precision="fp32", decoder="pyav", batch_size=16, align=align
    )
    if device_frames is not None:
        scorer.decoder = DeviceFrames(scorer.decoder, device_frames)
    seen = []
    analyzer_add = scorer.analyzer.add

    def add(batch: FrameBatch) -> None:  # which kind of batch the analysis really got
        seen.append(batch.is_tensor)
        analyzer_add(batch)

    scorer.analyzer.add = add
    result = scorer.score(clip)
    assert result.ok, result.error
    assert set(seen) == {device_frames is not None or device.startswith("cuda")}
    return result.table


def compare(a, b) -> dict[str, float]:
    assert a.num_rows == b.num_rows
    for column in ("frame", "source_frame", "track"):
        assert a[column].to_pylist() == b[column].to_pylist()
    faces = a["track"].is_valid().to_numpy(zero_copy_only=False)
    assert faces.sum() >= a.num_rows - 4  # two faces in (nearly) every frame: real work was compared
    box = largest_difference(a, b, ("x1", "y1", "x2", "y2"))
    return {"box": box, "va": largest_difference(a, b, ("valence", "arousal"))}


def largest_difference(a, b, columns) -> float:
    def values(table, column):
        return table[column].to_numpy(zero_copy_only=False).astype(np.float64)

    return max(float(np.nanmax(np.abs(values(a, c) - values(b, c)))) for c in columns)


@pytest.mark.parametrize("align", [False, True])
def test_prior_on_tensors_gives_the_numpy_traces(clip, align):
    host = traces(clip, "prior", "torch", None, align)
    tensors = traces(clip, "prior", "torch", "cpu", align)
    diff = compare(host, tensors)
    assert diff["box"] <= BOX_PX and diff["va"] <= VA, diff
    # The CPU default (ONNX Runtime on numpy) against the GPU path's code on tensors.
    diff = compare(traces(clip, "prior", "onnxruntime", None, align), tensors)
    assert diff["box"] <= BOX_PX and diff["va"] <= VA, diff


@pytest.mark.slow
def test_sequence_model_on_tensors_gives_the_numpy_traces(clip, checkpoint):
    host = traces(clip, str(checkpoint), "torch", None)
    tensors = traces(clip, str(checkpoint), "torch", "cpu")
    diff = compare(host, tensors)
    assert diff["box"] <= BOX_PX and diff["va"] <= VA, diff


def test_frame_batch_takes_tensors_and_says_where():
    images = torch.zeros((2, 4, 6, 3), dtype=torch.uint8)
    batch = FrameBatch(images, np.array([0, 1], np.int32), np.array([0.0, 0.04]))
    assert batch.is_tensor and batch.device == "cpu" and len(batch) == 2
    assert batch.host_images().shape == (2, 4, 6, 3)
    host = FrameBatch(np.zeros((1, 4, 6, 3), np.uint8), np.array([0], np.int32), np.array([0.0]))
    assert not host.is_tensor and host.device == "cpu"
    with pytest.raises(ValueError, match="uint8"):
        FrameBatch(images.float(), np.array([0, 1], np.int32), np.array([0.0, 0.04]))
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        FrameBatch([[0]], np.array([0], np.int32), np.array([0.0]))


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["prior", "sequence"])
def test_cuda_frames_give_the_cpu_traces(clip, checkpoint, model):
    """PyAV frames moved to the GPU once, everything after on the GPU (torch CUDA, fp32)."""
    name = "prior" if model == "prior" else str(checkpoint)
    host = traces(clip, name, "onnxruntime", None)
    scorer_traces = traces(clip, name, "torch", None, device="cuda")  # the Scorer wraps PyAV itself
    diff = compare(host, scorer_traces)
    # TF32 is off in torch by default for matmul; cuDNN convolutions may use it: looser bounds.
    assert diff["box"] <= 0.05 and diff["va"] <= 2e-3, diff
