"""Batched face detection with RetinaFace: frames in, boxes + 5 landmarks per face out.

``FaceDetector.default()`` runs the packaged MobileNet-0.25 (``weights/`` and its provenance
JSON); ``FaceDetector.from_checkpoint(path)`` a ResNet-50 in retinaface-pytorch's layout (the
user's ``--detector PATH``). Each frame is shrunk so that its longest side is at most
``max_side`` (never enlarged), normalised as the weights expect, run through the network (ONNX
Runtime on the CPU by default, or torch), decoded against the anchors of that input size,
thresholded and de-duplicated by NMS; boxes and landmarks come back in source pixels.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from affbatch.files import file_sha256
from affbatch.models import WEIGHTS_DIR
from affbatch.models import retinaface as rf

#: Minimum face probability kept (biubug6's detect.py uses 0.02 for evaluation, 0.6 for display).
SCORE_THRESHOLD = 0.5
#: Boxes overlapping a better one by more than this IoU are dropped (biubug6's value).
NMS_IOU = 0.4
#: Longest side of the network input; larger frames are shrunk to it, smaller ones kept.
MAX_SIDE = 640
#: Faces kept per frame, best first.
MAX_FACES = 10
#: Candidates (above the threshold, best first) that enter NMS per frame; bounds its cost.
PRE_NMS_TOP_K = 500
#: Frames per network call: bounds the memory of the float copies of large frames.
CHUNK = 16

PACKAGED_WEIGHTS = WEIGHTS_DIR / "retinaface_mobilenet0.25.safetensors"


@dataclass(frozen=True)
class Normalization:
    """What the weights expect: channel order, then ``(pixel - mean) / std`` per channel (0..255)."""

    channels: str  # "bgr" or "rgb"
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.channels not in ("bgr", "rgb"):
            raise ValueError(f"channels {self.channels!r}: choose bgr or rgb")


#: biubug6's detect.py (OpenCV BGR images minus a BGR mean); the packaged weights use it.
BIUBUG6 = Normalization("bgr", (104.0, 117.0, 123.0))
#: retinaface-pytorch (ternaus): RGB with albumentations' Normalize (ImageNet mean and std).
RETINAFACE_PYTORCH = Normalization("rgb", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
NORMALIZATIONS = {"biubug6": BIUBUG6, "retinaface-pytorch": RETINAFACE_PYTORCH}


@dataclass(frozen=True)
class Detections:
    """The faces of one frame, best score first, in source pixels.

    boxes: float32 (k, 4) ``x1, y1, x2, y2``, clipped to the frame (0..width, 0..height).
    scores: float32 (k,) face probability.
    landmarks: float32 (k, 5, 2) ``x, y`` in RetinaFace's order: the eye on the image's left
    (the person's right eye), the other eye, the nose tip, the mouth corner on the image's
    left, the other mouth corner. Not clipped: a landmark of a face cut by the border may lie
    outside the frame.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        k = len(self.scores)
        for name, array, shape in (
            ("boxes", self.boxes, (k, 4)),
            ("scores", self.scores, (k,)),
            ("landmarks", self.landmarks, (k, 5, 2)),
        ):
            if array.dtype != np.float32 or array.shape != shape:
                raise ValueError(f"Detections.{name}: float32 {shape} expected, got {array.dtype} {array.shape}")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


@dataclass(frozen=True)
class DetectorOptions:
    max_side: int = MAX_SIDE
    score_threshold: float = SCORE_THRESHOLD
    nms_iou: float = NMS_IOU
    max_faces: int = MAX_FACES

    def __post_init__(self) -> None:
        if self.max_side < 32:
            raise ValueError(f"max_side {self.max_side}: at least 32 (the network's coarsest stride)")
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold {self.score_threshold}: choose a value in [0, 1)")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou {self.nms_iou}: choose a value in (0, 1]")
        if self.max_faces < 1:
            raise ValueError(f"max_faces {self.max_faces}: at least 1")


class Network(Protocol):
    """float32 (N, 3, H, W) normalised -> ``loc`` (N, P, 4), ``conf`` (N, P, 2), ``landmarks``
    (N, P, 10): numpy from ONNX Runtime, torch tensors on the engine's device otherwise."""

    def __call__(self, x: torch.Tensor) -> tuple: ...


# --- runtimes ---------------------------------------------------------------------------------


class _EngineNetwork:
    """The network compiled by ``engines`` (ONNX Runtime with a cached export, or torch)."""

    def __init__(self, model: rf.RetinaFace, runtime: str, device: str, precision: str) -> None:
        import engines

        self.engine = engines.compile(
            model.eval().cpu(),
            (torch.zeros(1, 3, 64, 64),),
            ["input"],
            ["loc", "conf", "landmarks"],
            {
                "input": {0: "batch", 2: "height", 3: "width"},
                "loc": {0: "batch", 1: "priors"},
                "conf": {0: "batch", 1: "priors"},
                "landmarks": {0: "batch", 1: "priors"},
            },
            runtime=runtime,
            device=device,
            precision=precision,
        )

    def __call__(self, x: torch.Tensor) -> tuple:
        if self.engine.runtime == "onnxruntime":
            return self.engine(x.cpu().numpy())
        # torch and TensorRT: tensors stay on the engine's device; post-processing runs there.
        return self.engine(x.to(self.engine.device, non_blocking=True))


# --- pre- and post-processing -----------------------------------------------------------------


def network_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) of the network input: the longest side shrunk to ``max_side``, never enlarged."""
    longest = max(height, width)
    if longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def preprocess(
    images, max_side: int, normalization: Normalization, device: str | None = None, buffers: InputBuffers | None = None
) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, h, w) as the network takes it (see ``network_size``).

    ``images``: a numpy array or a torch tensor on any device; the result is on ``device``
    (default: the tensor's own device, the CPU for numpy). After the resize, channel order,
    conversion to float and normalisation are one pass per channel writing the contiguous
    output (not a flip, a contiguous copy, a float copy and a subtraction). On the CPU the
    output is written into ``buffers``' array when given (valid until the next call).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2)  # a channels-last view
    size = network_size(x.shape[2], x.shape[3], max_side)
    if size != tuple(x.shape[2:]):
        # Antialiased bilinear: a plain bilinear shrink aliases fine texture into false faces.
        # On the CPU, torch's uint8 channels-last kernel is ~20x its float one (1280x720 to
        # 640x360: ~1,300 vs ~60 frames/s on 2 cores); it rounds to whole grey levels.
        if x.device.type != "cpu":
            x = x.float()
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    shape = (x.shape[0], 3, *size)
    if x.device.type == "cpu" and buffers is not None:
        out = buffers.get(shape)
    else:
        out = torch.empty(shape, dtype=torch.float32, device=x.device)
    if x.device.type == "cpu":
        normalize_host(x.numpy(), normalization, out.numpy())
    else:
        normalize_device(x, normalization, out)
    return out


class InputBuffers:
    """The network's float input on the host, reused from call to call (one per thread).

    A chunk of 16 frames at 640x360 is 44 MB of float32: above glibc's mmap threshold (32 MB at
    most), so a fresh array is fresh pages from the kernel each time, and faulting them in cost
    more than the normalisation writing them (measured: 69 vs 77 ms for 64 frames at 360p on
    2 cores; ~4x the page faults of a whole ``score`` at 360p without reuse)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, shape: tuple[int, ...]) -> torch.Tensor:
        held = getattr(self._local, "array", None)
        size = math.prod(shape)
        if held is None or held.numel() < size:
            held = self._local.array = torch.empty(size, dtype=torch.float32)
        return held[:size].view(shape)

    def __getstate__(self) -> dict:  # a copy (pickled, deep-copied) starts with no buffer
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def normalize_host(x: np.ndarray, normalization: Normalization, out: np.ndarray) -> None:
    """(N, 3, h, w) pixels (any strides, uint8 or float) -> ``out`` float32, channel by channel.

    NumPy, one thread: torch's element-wise ops on the CPU are OpenMP parallel regions, which on
    a busy machine wait for a descheduled thread (measured with 12 runnable processes on 2
    cores: 198 ms per 16 frames at 360p in torch against 47-58 here).
    """
    for c, source in enumerate(_channel_order(normalization)):
        mean, std = np.float32(normalization.mean[c]), np.float32(normalization.std[c])
        np.subtract(x[:, source], mean, out=out[:, c], dtype=np.float32)
        if std != 1:
            out[:, c] /= std


def normalize_device(x: torch.Tensor, normalization: Normalization, out: torch.Tensor) -> None:
    """``normalize_host`` on the tensor's device: one fused op per channel."""
    for c, source in enumerate(_channel_order(normalization)):
        # (pixel - mean) / std as pixel * (1 / std) + (-mean / std); with std 1 exactly pixel - mean.
        bias = torch.tensor(-normalization.mean[c] / normalization.std[c], dtype=torch.float32, device=x.device)
        torch.add(bias, x[:, source], alpha=1.0 / normalization.std[c], out=out[:, c])


def _channel_order(normalization: Normalization) -> tuple[int, int, int]:
    return (2, 1, 0) if normalization.channels == "bgr" else (0, 1, 2)


@lru_cache(maxsize=16)
def _priors(height: int, width: int, device: str = "cpu") -> torch.Tensor:
    return torch.from_numpy(rf.prior_boxes(height, width)).to(device)


def _decode(loc: torch.Tensor, landmarks: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``retinaface.decode`` in torch, same order of operations: (..., 4) boxes, (..., 5, 2) points."""
    centre, size = priors[..., :2], priors[..., 2:]
    box_centre = centre + loc[..., :2] * rf.VARIANCES[0] * size
    box_size = size * torch.exp(loc[..., 2:] * rf.VARIANCES[1])
    boxes = torch.cat([box_centre - box_size / 2, box_centre + box_size / 2], dim=-1)
    points = landmarks.reshape(*landmarks.shape[:-1], 5, 2)
    points = centre[..., None, :] + points * rf.VARIANCES[0] * size[..., None, :]
    return boxes, points


def batched_nms(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float, max_keep: int) -> torch.Tensor:
    """Greedy NMS of every frame of a batch at once: bool (N, k), the boxes kept.

    ``boxes`` (N, k, 4) of each frame in descending score order, ``valid`` (N, k) the ones that
    take part. A box is dropped when its IoU with a better box already kept exceeds
    ``iou_threshold``; at most ``max_keep`` per frame. One step per candidate rank, each over all
    frames, on the boxes' device (no torchvision; nothing goes to the host).
    """
    b = boxes.double()
    area = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    w = (torch.minimum(b[:, :, None, 2], b[:, None, :, 2]) - torch.maximum(b[:, :, None, 0], b[:, None, :, 0])).clamp(
        min=0
    )
    h = (torch.minimum(b[:, :, None, 3], b[:, None, :, 3]) - torch.maximum(b[:, :, None, 1], b[:, None, :, 1])).clamp(
        min=0
    )
    inter = w * h
    overlaps = inter / torch.clamp(area[:, :, None] + area[:, None, :] - inter, min=1e-12) > iou_threshold
    suppressed = ~valid
    keep = torch.zeros_like(valid)
    count = torch.zeros(len(b), dtype=torch.int64, device=b.device)
    for i in range(b.shape[1]):
        take = ~suppressed[:, i] & (count < max_keep)
        keep[:, i] = take
        count += take
        suppressed = suppressed | (take[:, None] & overlaps[:, i])
        # Stop once no frame has a candidate left (checked every few ranks: a device sync).
        if i % 8 == 7 and not bool((~suppressed[:, i + 1 :] & (count < max_keep)[:, None]).any()):
            break
    return keep


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first (one frame; ``batched_nms``)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked = torch.from_numpy(np.asarray(boxes, np.float64)[order])[None]
    keep = batched_nms(ranked, torch.ones(ranked.shape[:2], dtype=torch.bool), iou_threshold, max_keep or len(order))
    return order[keep[0].numpy()]


def _candidates(scores: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per frame, the anchors above ``threshold``, best first (ties in anchor order), at most
    ``PRE_NMS_TOP_K``: anchor index, score, and whether the slot holds one, each (N, k).

    Only the few candidates are sorted (not every anchor): a stable sort by score, then a stable
    sort by frame, keeps each frame's candidates by score with ties in anchor order.
    """
    if scores.device.type == "cpu":  # NumPy: no OpenMP region over every anchor (see normalize_host)
        host = scores.numpy()
        frame_np, anchor_np = np.nonzero(host > threshold)  # frame-major, anchors ascending
        frame, anchor = torch.from_numpy(frame_np), torch.from_numpy(anchor_np)
    else:
        frame, anchor = (scores > threshold).nonzero(as_tuple=True)
    value = scores[frame, anchor]
    by_score = torch.sort(-value, stable=True).indices
    frame, anchor, value = frame[by_score], anchor[by_score], value[by_score]
    by_frame = torch.sort(frame, stable=True).indices
    frame, anchor, value = frame[by_frame], anchor[by_frame], value[by_frame]
    counts = torch.bincount(frame, minlength=len(scores))
    k = min(int(counts.max()) if len(frame) else 0, PRE_NMS_TOP_K)
    rank = torch.arange(len(frame), device=scores.device) - (torch.cumsum(counts, 0) - counts)[frame]
    slot = rank < k
    frame, rank = frame[slot], rank[slot]
    order = torch.zeros((len(scores), k), dtype=torch.int64, device=scores.device)
    best = torch.full((len(scores), k), -1.0, dtype=scores.dtype, device=scores.device)
    valid = torch.zeros((len(scores), k), dtype=torch.bool, device=scores.device)
    order[frame, rank] = anchor[slot]
    best[frame, rank] = value[slot]
    valid[frame, rank] = True
    return order, best, valid


def postprocess(
    loc, conf, landmarks, net_size: tuple[int, int], source_size: tuple[int, int], options: DetectorOptions
) -> list[Detections]:
    """Network outputs for a batch -> ``Detections`` per frame in source pixels (``source_size`` = (H, W)).

    Outputs are numpy arrays or torch tensors on any device; thresholding, the best
    ``PRE_NMS_TOP_K``, decoding and NMS run there for the whole batch, and only the kept faces
    come to the host.
    """
    loc, conf, landmarks = (torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in (loc, conf, landmarks))
    device = loc.device
    priors = _priors(*net_size, str(device))
    if loc.shape[1] != len(priors):
        raise ValueError(f"network gave {loc.shape[1]} anchors for a {net_size} input, expected {len(priors)}")
    frames = len(loc)
    order, best, valid = _candidates(conf[..., 1], options.score_threshold)
    if order.shape[1] == 0:
        return [Detections.empty() for _ in range(frames)]
    boxes, points = _decode(
        loc.gather(1, order[..., None].expand(-1, -1, 4)).double(),
        landmarks.gather(1, order[..., None].expand(-1, -1, 10)).double(),
        priors[order].double(),
    )
    # Fractions of the network input are fractions of the source frame: the resize maps the
    # whole frame onto the whole input.
    height, width = source_size
    scale = torch.tensor([width, height], dtype=torch.float64, device=device)
    boxes = boxes * scale.repeat(2)
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, height)
    points = points * scale
    valid &= (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    keep = batched_nms(boxes, valid, options.nms_iou, options.max_faces)
    counts = keep.sum(dim=1).cpu().tolist()
    kept_boxes = boxes[keep].float().cpu().numpy()
    kept_scores = best[keep].float().cpu().numpy()
    kept_points = points[keep].float().cpu().numpy()
    results, start = [], 0
    for n in counts:
        stop = start + n
        results.append(Detections(kept_boxes[start:stop], kept_scores[start:stop], kept_points[start:stop]))
        start = stop
    return results


# --- the detector -----------------------------------------------------------------------------


@dataclass
class FaceDetector:
    """``detector(images)``: uint8 (N, H, W, 3) RGB frames of one size -> one ``Detections`` each.

    ``images``: a numpy array (host) or a torch tensor on any device; frames on the engine's
    device are pre- and post-processed there, and only the kept faces come to the host.

    ``name`` and ``weights_sha256`` identify the model in the traces' metadata; ``runtime`` and
    ``device`` say where it runs. Each frame is detected on its own: the other frames of a batch
    change its results by float rounding at most.
    """

    model: rf.RetinaFace = field(repr=False)
    name: str
    weights_sha256: str
    normalization: Normalization = BIUBUG6
    options: DetectorOptions = field(default_factory=DetectorOptions)
    runtime: str = "auto"
    device: str = "cpu"
    precision: str = "auto"
    network: Network = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import engines

        # One rule for every model: what engines resolves (a no-op for resolved names).
        placement = engines.resolve(self.runtime, self.device, self.precision)
        self.runtime, self.device, self.precision = placement.runtime, placement.device, placement.precision
        self.network = _EngineNetwork(self.model, self.runtime, self.device, self.precision)
        self._buffers = InputBuffers()

    @classmethod
    def default(
        cls,
        *,
        options: DetectorOptions | None = None,
        runtime: str = "auto",
        device: str = "cpu",
        precision: str = "auto",
    ) -> FaceDetector:
        """The packaged RetinaFace MobileNet-0.25 (see ``retinaface_mobilenet0.25.json`` for its origin)."""
        from safetensors.torch import load_file

        model = rf.build(load_file(str(PACKAGED_WEIGHTS)), "mobilenet0.25")
        return cls(
            model,
            name="retinaface-mobilenet0.25",
            weights_sha256=file_sha256(PACKAGED_WEIGHTS),
            normalization=BIUBUG6,
            options=options or DetectorOptions(),
            runtime=runtime,
            device=device,
            precision=precision,
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        normalization: str = "retinaface-pytorch",
        options: DetectorOptions | None = None,
        runtime: str = "auto",
        device: str = "cpu",
        precision: str = "auto",
    ) -> FaceDetector:
        """A RetinaFace checkpoint in biubug6's / retinaface-pytorch's state-dict layout.

        Typically retinaface-pytorch's ResNet-50 (``retinaface_resnet50_2020-07-20``, the .pth or
        its .zip); batch-norm is folded at load time. ``normalization``: ``retinaface-pytorch``
        (RGB, ImageNet mean/std; that package's checkpoints) or ``biubug6`` (BGR minus mean;
        biubug6's own ``*_Final.pth``).
        """
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization {normalization!r}: choose one of {', '.join(NORMALIZATIONS)}")
        model, digest = rf.load(path)
        return cls(
            model,
            name=f"retinaface-{model.backbone}",
            weights_sha256=digest,
            normalization=NORMALIZATIONS[normalization],
            options=options or DetectorOptions(),
            runtime=runtime,
            device=device,
            precision=precision,
        )

    def __call__(self, images) -> list[Detections]:
        if not _is_frames(images):
            shape = tuple(getattr(images, "shape", ())) or None
            raise ValueError(
                f"images: uint8 (N, H, W, 3) RGB expected, got {getattr(images, 'dtype', type(images))} {shape}"
            )
        source_size = images.shape[1], images.shape[2]
        # Pre-processing runs where the network does (a host batch goes to a GPU engine once,
        # as uint8); ONNX Runtime takes host memory.
        where = "cpu" if self.runtime == "onnxruntime" else self.device
        results: list[Detections] = []
        for start in range(0, len(images), CHUNK):
            x = preprocess(
                images[start : start + CHUNK], self.options.max_side, self.normalization, where, self._buffers
            )
            loc, conf, landmarks = self.network(x)
            results += postprocess(loc, conf, landmarks, tuple(x.shape[2:]), source_size, self.options)
        return results


def _is_frames(images) -> bool:
    if isinstance(images, np.ndarray):
        return images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] == 3
    is_tensor = isinstance(images, torch.Tensor)
    return is_tensor and images.dtype == torch.uint8 and images.ndim == 4 and images.shape[3] == 3
