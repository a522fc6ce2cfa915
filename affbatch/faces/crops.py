"""Face crops as the paper feeds them to its networks: 96x96x3 RGB, intensities in [-1, 1].

The crop is a square centred on the detector's box, ``CROP_MARGIN`` times its longer side, so
the whole face and a little context (chin, forehead) are in, whatever the box's aspect. Parts of
the square outside the frame are black. With ``align=True`` the square is also turned so that
the eyes (the detector's first two landmarks) are level. The default is no alignment: the
paper crops detected faces ("cropped and resized"). Training (``training``) uses this same
function, so the models see the same crops in training and in ``affbatch score``.

Down-scaling is antialiased (area-like), so a large face is not aliased into its crop.

Two implementations of the same crop: ``crop_faces``, face by face through ``F.interpolate``
(the reference, and what training stores), and ``crop_faces_batched``, every face of a batch at
once on the frames' own device (host numpy or a torch tensor on a GPU): the antialiased resize
as two matrix products per face (batched) whose rows hold the filter weights that
``F.interpolate(..., antialias=True)`` uses, the rotation of ``align`` as one ``grid_sample``
over the batch. They agree within ``BATCHED_TOLERANCE`` (float rounding;
``tests/faces/test_crops.py``). On the CPU the face-by-face one is the faster (the analyzer uses
it for host frames); the batched one is for frames on a GPU.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

#: "All frames were cropped and resized to 96 x 96 x 3" (the paper, Section IV).
CROP_SIZE = 96
#: "...and their intensities normalised to the range [-1, 1]".
PIXEL_RANGE = (-1.0, 1.0)
#: Side of the crop square over the longer side of the detector's box. Not from the paper (it
#: does not say); 1.25 keeps RetinaFace's tight boxes' chin and forehead in.
CROP_MARGIN = 1.25
#: Largest difference, in PIXEL_RANGE units, between ``crop_faces_batched`` and ``crop_faces``:
#: the same filter, summed in another order in float32 (measured: 1.2e-5 at most).
BATCHED_TOLERANCE = 1e-4
#: Float copies of face regions ``crop_faces_batched`` holds at once (bytes): faces go in groups.
REGION_BYTES = 256 * 2**20


def crop_faces(
    images: np.ndarray,
    frame_of_face: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray | None = None,
    align: bool = False,
    size: int = CROP_SIZE,
) -> np.ndarray:
    """Crop faces out of frames.

    Args:
        images: uint8 (N, H, W, 3) RGB frames.
        frame_of_face: int (K,): the frame each face is in.
        boxes: float (K, 4) x1, y1, x2, y2 in pixels of those frames.
        landmarks: float (K, 5, 2), needed with ``align`` (eyes first, as RetinaFace gives them).
        align: turn each crop so that the eyes are level.
        size: output side in pixels.

    Returns:
        float32 (K, 3, size, size), RGB, in PIXEL_RANGE.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.empty((len(boxes), 3, size, size), np.float32)
    low, high = PIXEL_RANGE
    for k, (n, (cx, cy, side, angle)) in enumerate(
        zip(np.asarray(frame_of_face), _geometry(boxes, landmarks, align), strict=True)
    ):
        crop = _crop_one(images[int(n)], cx, cy, side, angle, size)
        out[k] = crop * ((high - low) / 255.0) + low
    return out


def _geometry(boxes: np.ndarray, landmarks: np.ndarray | None, align: bool) -> list[tuple[float, float, float, float]]:
    """Per face: the crop square's centre, side and turn (radians; 0 without ``align``)."""
    if align and landmarks is None:
        raise ValueError("align=True needs the landmarks")
    out = []
    for k, box in enumerate(boxes.tolist()):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = CROP_MARGIN * max(box[2] - box[0], box[3] - box[1], 1.0)
        angle = 0.0
        if align:
            (lx, ly), (rx, ry) = landmarks[k][0], landmarks[k][1]
            angle = math.atan2(ry - ly, rx - lx)
        out.append((cx, cy, side, angle))
    return out


def crop_faces_batched(
    images,
    frame_of_face: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray | None = None,
    align: bool = False,
    size: int = CROP_SIZE,
) -> torch.Tensor:
    """``crop_faces`` for every face at once, on the frames' device (within ``BATCHED_TOLERANCE``).

    Args:
        images: uint8 (N, H, W, 3) RGB frames, a numpy array or a torch tensor on any device.
        frame_of_face, boxes, landmarks, align, size: as ``crop_faces`` (host arrays).

    Returns:
        float32 torch tensor (K, 3, size, size) in PIXEL_RANGE on the frames' device (the CPU
        for numpy frames, sharing no memory with them).
    """
    frames = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    device = frames.device
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    geometry = _geometry(boxes, landmarks, align)
    if not geometry:
        return torch.zeros((0, 3, size, size), dtype=torch.float32, device=device)
    plans = [_plan(cx, cy, side, angle, size) for cx, cy, side, angle in geometry]
    faces = np.asarray(frame_of_face).tolist()
    # Faces in groups, so that the float copies of their regions stay under REGION_BYTES.
    span = max(p.side for p in plans)
    group = max(1, REGION_BYTES // (span * span * 3 * 4))
    crops = [_crop_group(frames, faces[i : i + group], plans[i : i + group], size) for i in range(0, len(plans), group)]
    low, high = PIXEL_RANGE
    out = crops[0] if len(crops) == 1 else torch.cat(crops)
    return (out.clamp(0, 255) * ((high - low) / 255.0) + low).contiguous()


def _crop_group(frames: torch.Tensor, faces: list[int], plans: list[_Plan], size: int) -> torch.Tensor:
    """(K, 3, size, size) float32 in [0, 255] (not clamped) for these faces."""
    device = frames.device
    height, width = frames.shape[1:3]
    inner = max(p.inner for p in plans)
    span = max(p.side for p in plans)
    # Each face's square region of its frame, zero (black) outside the frame, padded to the
    # largest of the group: plain slices.
    regions = torch.zeros((len(plans), span, span, 3), dtype=torch.uint8, device=device)
    for k, (n, p) in enumerate(zip(faces, plans, strict=True)):
        sx0, sy0 = max(p.x0, 0), max(p.y0, 0)
        sx1, sy1 = min(p.x0 + p.side, width), min(p.y0 + p.side, height)
        if sx1 > sx0 and sy1 > sy0:
            regions[k, sy0 - p.y0 : sy1 - p.y0, sx0 - p.x0 : sx1 - p.x0] = frames[n, sy0:sy1, sx0:sx1]
    # The resize as two matrix products per face, (inner, span) @ region @ (span, inner): the
    # filter's taps scattered into dense rows (zeros elsewhere).
    mix = torch.from_numpy(_mixing(plans, inner, span)).to(device=device, dtype=torch.float32, non_blocking=True)
    k_count = len(plans)
    tall = torch.bmm(mix, regions.reshape(k_count, span, span * 3).float())  # (K, inner, span * 3)
    tall = tall.reshape(k_count, inner, span, 3).permute(0, 3, 1, 2).reshape(k_count, 3 * inner, span)
    square = torch.bmm(tall, mix.transpose(1, 2)).reshape(k_count, 3, inner, inner)
    if any(p.angle for p in plans):
        return _turn(square.contiguous(), plans, size)
    return square


def _turn(squares: torch.Tensor, plans: list[_Plan], size: int) -> torch.Tensor:
    """``_crop_one``'s rotation for the batch: each face's turned square out of its upright one.

    Squares are zero-padded to the largest ``inner``; with ``align_corners=False`` a square of
    side s in a tensor of side M maps normalised x to x * s/M + (s/M - 1), so theta is scaled so.
    """
    m = squares.shape[-1]
    theta = np.zeros((len(plans), 2, 3), np.float64)
    for k, p in enumerate(plans):
        scale, r = 1.0 / p.spread, p.inner / m
        cos, sin = math.cos(p.angle) * scale, math.sin(p.angle) * scale
        theta[k] = [[cos * r, -sin * r, r - 1.0], [sin * r, cos * r, r - 1.0]]
    theta_t = torch.from_numpy(theta).to(device=squares.device, dtype=torch.float32)
    grid = F.affine_grid(theta_t, [len(plans), 3, size, size], align_corners=False)
    return F.grid_sample(squares, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _Plan:
    """Where one face's crop comes from: its square region of the frame and the resize's taps."""

    def __init__(self, side: int, x0: int, y0: int, inner: int, angle: float, spread: float, taps) -> None:
        self.side, self.x0, self.y0, self.inner, self.angle, self.spread = side, x0, y0, inner, angle, spread
        self.taps = taps  # (index (inner, T) into the region's rows or columns, weight (inner, T))


def _plan(cx: float, cy: float, side: float, angle: float, size: int) -> _Plan:
    spread = abs(math.cos(angle)) + abs(math.sin(angle))
    s = max(1, round(side * spread))  # as _crop_one and _square_region
    inner = max(size, math.ceil(size * spread))
    return _Plan(s, round(cx - s / 2), round(cy - s / 2), inner, angle, spread, _aa_taps(s, inner))


@lru_cache(maxsize=4096)
def _aa_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source index and weight (n_out, T) of each output pixel of an antialiased bilinear resize
    n_in -> n_out: ATen's ``_compute_indices_min_size_weights_aa`` (PIL's filter: a triangle as
    wide as the scale when shrinking, plain bilinear when enlarging; align_corners=False)."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(n_out) + 0.5)
    lo = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), n_in)
    taps = int((hi - lo).max())
    j = np.arange(taps)[None, :]
    weight = np.clip(1.0 - np.abs((j + lo[:, None] - centre[:, None] + 0.5) * invscale), 0.0, None)
    weight[j >= (hi - lo)[:, None]] = 0.0
    total = weight.sum(axis=1, keepdims=True)
    weight = np.divide(weight, total, out=np.zeros_like(weight), where=total != 0)
    index = np.minimum(lo[:, None] + j, n_in - 1)
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def _mixing(plans: list[_Plan], inner: int, span: int) -> np.ndarray:
    """(K, inner, span): row i of face k holds the weights of the region pixels output i mixes
    (zero-padded: faces differ in region side and ``inner``)."""
    out = np.zeros((len(plans), inner, span), np.float64)
    for k, p in enumerate(plans):
        index, weight = p.taps
        rows = np.broadcast_to(np.arange(index.shape[0])[:, None], index.shape)
        np.add.at(out[k], (rows, index), weight)
    return out


def _crop_one(image: np.ndarray, cx: float, cy: float, side: float, angle: float, size: int) -> np.ndarray:
    """(3, size, size) float32 in [0, 255]: the square of ``side`` at (cx, cy), turned by -angle."""
    spread = abs(math.cos(angle)) + abs(math.sin(angle))  # 1 without rotation
    outer = side * spread
    region = _square_region(image, cx, cy, outer)
    tensor = torch.from_numpy(region).permute(2, 0, 1)[None].float()
    inner = max(size, math.ceil(size * spread))
    tensor = F.interpolate(tensor, size=(inner, inner), mode="bilinear", antialias=True, align_corners=False)
    if angle:
        # Sample the turned square of side ``side`` out of the upright one of side ``outer``.
        scale = 1.0 / spread
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=torch.float32)
        grid = F.affine_grid(theta, [1, 3, size, size], align_corners=False)
        tensor = F.grid_sample(tensor, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    elif inner != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return tensor[0].clamp_(0, 255).numpy()


def _square_region(image: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    """The (S, S, 3) square of ``image`` centred at (cx, cy), zero (black) outside the frame."""
    h, w = image.shape[:2]
    s = max(1, round(side))
    x0, y0 = round(cx - s / 2), round(cy - s / 2)
    region = np.zeros((s, s, 3), np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + s, w), min(y0 + s, h)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return region
