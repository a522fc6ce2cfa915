"""The detector's batched torch pre- and post-processing against the recipe written out again,
frame by frame on the host (the code they replaced), and on torch tensors as a GPU batch has them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affbatch.faces.detector import (
    BIUBUG6,
    PRE_NMS_TOP_K,
    RETINAFACE_PYTORCH,
    DetectorOptions,
    FaceDetector,
    batched_nms,
    normalize_device,
    postprocess,
    preprocess,
)
from affbatch.models import retinaface as rf
from tests.support.face_media import portraits


def face_frames(faces: int, frames: int, width: int, height: int) -> np.ndarray:
    """uint8 (frames, height, width, 3): ``faces`` real portraits on a gradient, drifting right."""
    people = portraits(size=height // 2)[:faces]
    out = np.empty((frames, height, width, 3), np.uint8)
    out[:] = np.linspace(60, 160, width, dtype=np.uint8)[None, None, :, None]
    side = height // 2
    for k in range(frames):
        for i, person in enumerate(people):
            x = 20 + 3 * k + i * (side + 40)
            out[k, height // 4 : height // 4 + side, x : x + side] = person
    return out


def _greedy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> list[int]:
    """Greedy NMS, one box at a time in plain Python."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        if len(kept) == max_keep:
            break
        x1, y1, x2, y2 = boxes[i]
        ok = True
        for j in kept:
            a1, b1, a2, b2 = boxes[j]
            inter = max(0.0, min(x2, a2) - max(x1, a1)) * max(0.0, min(y2, b2) - max(y1, b1))
            union = (x2 - x1) * (y2 - y1) + (a2 - a1) * (b2 - b1) - inter
            if inter / union > iou_threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def _host_postprocess(loc, conf, landmarks, net_size, source_size, options):
    """The per-frame numpy recipe: threshold, best PRE_NMS_TOP_K, decode, clip, NMS."""
    priors = rf.prior_boxes(*net_size)
    height, width = source_size
    scale = np.array([width, height], np.float64)
    out = []
    for i in range(len(loc)):
        scores = conf[i, :, 1]
        cand = np.flatnonzero(scores > options.score_threshold)
        cand = cand[np.argsort(-scores[cand], kind="stable")[:PRE_NMS_TOP_K]]
        boxes, points = rf.decode(loc[i, cand].astype(np.float64), landmarks[i, cand].astype(np.float64), priors[cand])
        boxes = boxes * np.tile(scale, 2)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        points = points * scale
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, points, s = boxes[visible], points[visible], scores[cand][visible]
        keep = _greedy(boxes.tolist(), s.tolist(), options.nms_iou, options.max_faces)
        out.append((boxes[keep].astype(np.float32), s[keep], points[keep].astype(np.float32)))
    return out


def test_batched_nms_is_greedy_nms_per_frame():
    rng = np.random.default_rng(1)
    n, k = 6, 40
    xy = rng.uniform(0, 100, (n, k, 2))
    wh = rng.uniform(5, 40, (n, k, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1)
    scores = np.sort(rng.uniform(0.5, 1.0, (n, k)), axis=1)[:, ::-1]
    valid = rng.uniform(size=(n, k)) > 0.2
    for iou, max_keep in ((0.4, 10), (0.2, 3), (0.7, 40)):
        keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(valid), iou, max_keep).numpy()
        for i in range(n):
            idx = np.flatnonzero(valid[i])
            expected = idx[_greedy(boxes[i, idx].tolist(), scores[i, idx].tolist(), iou, max_keep)]
            assert np.flatnonzero(keep[i]).tolist() == sorted(expected.tolist())


@pytest.fixture(scope="module")
def network_outputs():
    """Real network outputs at a low threshold (many overlapping candidates), 2-face frames."""
    frames = face_frames(faces=2, frames=6, width=480, height=270)
    detector = FaceDetector.default(runtime="onnxruntime")
    x = preprocess(frames, 640, BIUBUG6)
    return detector.network(x), tuple(x.shape[2:]), frames.shape[1:3]


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.99999])
def test_postprocess_matches_the_host_recipe(network_outputs, threshold):
    (loc, conf, landmarks), net_size, source_size = network_outputs
    options = DetectorOptions(score_threshold=threshold)
    ours = postprocess(loc, conf, landmarks, net_size, source_size, options)
    theirs = _host_postprocess(loc, conf, landmarks, net_size, source_size, options)
    assert len(ours) == len(theirs)
    faces = 0
    for found, (boxes, scores, points) in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(found.boxes, boxes, atol=1e-4)
        np.testing.assert_array_equal(found.scores, scores)
        np.testing.assert_allclose(found.landmarks, points, atol=1e-4)
        faces += len(found)
    if threshold == 0.5:
        assert faces == 12  # two faces in each of the six frames


def test_postprocess_takes_tensors(network_outputs):
    (loc, conf, landmarks), net_size, source_size = network_outputs
    options = DetectorOptions()
    host = postprocess(loc, conf, landmarks, net_size, source_size, options)
    tensors = [torch.from_numpy(a) for a in (loc, conf, landmarks)]
    for a, b in zip(host, postprocess(*tensors, net_size, source_size, options), strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)


@pytest.mark.parametrize("normalization", [BIUBUG6, RETINAFACE_PYTORCH])
def test_preprocess_is_the_recipe_in_one_pass(normalization):
    rng = np.random.default_rng(2)
    for shape in ((3, 37, 53, 3), (2, 360, 800, 3)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        x = preprocess(images, 640, normalization)
        assert x.is_contiguous() and x.dtype == torch.float32
        # The old recipe: resize (uint8 on the CPU), channel order, float, minus mean, over std.
        y = torch.from_numpy(images).permute(0, 3, 1, 2)
        if tuple(x.shape[2:]) != shape[1:3]:
            y = torch.nn.functional.interpolate(y, size=x.shape[2:], mode="bilinear", antialias=True)
        if normalization.channels == "bgr":
            y = y.flip(1)
        y = (y.float() - torch.tensor(normalization.mean).reshape(1, 3, 1, 1)) / torch.tensor(
            normalization.std
        ).reshape(1, 3, 1, 1)
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5)
        # A torch tensor of the same frames gives the same input.
        np.testing.assert_array_equal(preprocess(torch.from_numpy(images), 640, normalization).numpy(), x.numpy())
        # The device code (torch ops; NumPy on the host) agrees with the host code, on frames
        # that need no resize (normalize_device writes an output of its input's size).
        if tuple(x.shape[2:]) == shape[1:3]:
            on_device = torch.empty_like(x)
            normalize_device(torch.from_numpy(images).permute(0, 3, 1, 2).float(), normalization, on_device)
            np.testing.assert_allclose(on_device.numpy(), x.numpy(), atol=1e-5)


def test_detector_takes_torch_frames():
    frames = face_frames(faces=2, frames=4, width=480, height=270)
    for runtime in ("onnxruntime", "torch"):
        detector = FaceDetector.default(runtime=runtime)
        for a, b in zip(detector(frames), detector(torch.from_numpy(frames)), strict=True):
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
            assert len(a) == 2


@pytest.mark.gpu
def test_post_processing_on_cuda_is_the_cpus(network_outputs):
    (loc, conf, landmarks), net_size, source_size = network_outputs
    options = DetectorOptions(score_threshold=0.05)
    host = postprocess(loc, conf, landmarks, net_size, source_size, options)
    cuda = postprocess(*(torch.from_numpy(a).cuda() for a in (loc, conf, landmarks)), net_size, source_size, options)
    for a, b in zip(host, cuda, strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


@pytest.mark.gpu
def test_detector_on_cuda_frames():
    frames = face_frames(faces=2, frames=4, width=480, height=270)
    cpu = FaceDetector.default(runtime="onnxruntime")
    gpu = FaceDetector.default(runtime="torch", device="cuda")
    for a, b in zip(cpu(frames), gpu(torch.from_numpy(frames).cuda()), strict=True):
        assert len(a) == len(b) == 2
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
