"""Batched face detection with RetinaFace: frames in, boxes + 5 landmarks per face out.

``FaceDetector.default()`` runs the packaged MobileNet-0.25 (``weights/`` and its provenance
JSON); ``FaceDetector.from_checkpoint(path)`` a ResNet-50 in retinaface-pytorch's layout (the
user's ``--detector PATH``). Each frame is shrunk so that its longest side is at most
``max_side`` (never enlarged), normalised as the weights expect, run through the network (ONNX
Runtime on the CPU by default, or torch), decoded against the anchors of that input size,
thresholded and de-duplicated by NMS; boxes and landmarks come back in source pixels.
"""

from __future__ import annotations

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
    """float32 (N, 3, H, W) normalised -> numpy ``loc`` (N, P, 4), ``conf`` (N, P, 2), ``landmarks`` (N, P, 10)."""

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


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

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.engine.runtime == "onnxruntime":
            outputs = self.engine(x.cpu().numpy())
        else:  # torch tensors stay on the engine's device; only the small outputs come back
            outputs = tuple(t.float().cpu().numpy() for t in self.engine(x.to(self.engine.device)))
        loc, conf, landmarks = outputs
        return loc, conf, landmarks


# --- pre- and post-processing -----------------------------------------------------------------


def network_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) of the network input: the longest side shrunk to ``max_side``, never enlarged."""
    longest = max(height, width)
    if longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def preprocess(images: np.ndarray, max_side: int, normalization: Normalization, device: str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, h, w) as the network takes it (see ``network_size``)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)  # a channels-last view
    size = network_size(images.shape[1], images.shape[2], max_side)
    if size != tuple(images.shape[1:3]):
        # Antialiased bilinear: a plain bilinear shrink aliases fine texture into false faces.
        # On the CPU, torch's uint8 channels-last kernel is ~20x its float one (1280x720 to
        # 640x360: ~1,300 vs ~60 frames/s on 2 cores); it rounds to whole grey levels.
        if x.device.type != "cpu":
            x = x.float()
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    if normalization.channels == "bgr":
        x = x.flip(1)
    x = x.contiguous().float()
    x -= torch.tensor(normalization.mean, device=x.device).reshape(1, 3, 1, 1)
    if normalization.std != (1.0, 1.0, 1.0):
        x /= torch.tensor(normalization.std, device=x.device).reshape(1, 3, 1, 1)
    return x


@lru_cache(maxsize=16)
def _priors(height: int, width: int) -> np.ndarray:
    return rf.prior_boxes(height, width)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first.

    A box is dropped when its IoU with a better box already kept exceeds ``iou_threshold``.
    The IoU matrix is computed at once; the greedy pass walks only the kept rows.
    """
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float64)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-12)
    suppressed = np.zeros(len(b), bool)
    keep: list[int] = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        suppressed |= iou[i] > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]


def postprocess(
    loc: np.ndarray,
    conf: np.ndarray,
    landmarks: np.ndarray,
    net_size: tuple[int, int],
    source_size: tuple[int, int],
    options: DetectorOptions,
) -> list[Detections]:
    """Network outputs for a batch -> ``Detections`` per frame in source pixels (``source_size`` = (H, W))."""
    priors = _priors(*net_size)
    if loc.shape[1] != len(priors):
        raise ValueError(f"network gave {loc.shape[1]} anchors for a {net_size} input, expected {len(priors)}")
    height, width = source_size
    scale = np.array([width, height], np.float64)
    results = []
    for i in range(len(loc)):
        scores = conf[i, :, 1]
        candidates = np.flatnonzero(scores > options.score_threshold)
        if len(candidates) == 0:
            results.append(Detections.empty())
            continue
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:PRE_NMS_TOP_K]]
        boxes, points = rf.decode(
            loc[i, candidates].astype(np.float64), landmarks[i, candidates].astype(np.float64), priors[candidates]
        )
        # Fractions of the network input are fractions of the source frame: the resize maps
        # the whole frame onto the whole input.
        boxes = boxes * np.tile(scale, 2)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        points = points * scale
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, points, kept_scores = boxes[visible], points[visible], scores[candidates][visible]
        keep = nms(boxes, kept_scores, options.nms_iou, options.max_faces)
        results.append(
            Detections(
                boxes[keep].astype(np.float32),
                kept_scores[keep].astype(np.float32),
                points[keep].astype(np.float32),
            )
        )
    return results


# --- the detector -----------------------------------------------------------------------------


@dataclass
class FaceDetector:
    """``detector(images)``: uint8 (N, H, W, 3) RGB frames of one size -> one ``Detections`` each.

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

    def __call__(self, images: np.ndarray) -> list[Detections]:
        if not (
            isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] == 3
        ):
            shape = getattr(images, "shape", None)
            raise ValueError(
                f"images: uint8 (N, H, W, 3) RGB expected, got {getattr(images, 'dtype', type(images))} {shape}"
            )
        source_size = images.shape[1], images.shape[2]
        results: list[Detections] = []
        for start in range(0, len(images), CHUNK):
            x = preprocess(images[start : start + CHUNK], self.options.max_side, self.normalization, self.device)
            loc, conf, landmarks = self.network(x)
            results += postprocess(loc, conf, landmarks, tuple(x.shape[2:]), source_size, self.options)
        return results
