"""Face crops as the paper feeds them to its networks: 96x96x3 RGB, intensities in [-1, 1].

The crop is a square centred on the detector's box, ``CROP_MARGIN`` times its longer side, so
the whole face and a little context (chin, forehead) are in, whatever the box's aspect. Parts of
the square outside the frame are black. With ``align=True`` the square is also turned so that
the eyes (the detector's first two landmarks) are level. The default is no alignment: the
paper crops detected faces ("cropped and resized"). Training (``training``) uses this same
function, so the models see the same crops in training and in ``affbatch score``.

Down-scaling is antialiased (area-like), so a large face is not aliased into its crop.
"""

from __future__ import annotations

import math

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
    if align and landmarks is None:
        raise ValueError("align=True needs the landmarks")
    out = np.empty((len(boxes), 3, size, size), np.float32)
    low, high = PIXEL_RANGE
    for k, (n, box) in enumerate(zip(np.asarray(frame_of_face), boxes, strict=True)):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = CROP_MARGIN * max(box[2] - box[0], box[3] - box[1], 1.0)
        angle = 0.0
        if align:
            (lx, ly), (rx, ry) = landmarks[k][0], landmarks[k][1]
            angle = math.atan2(ry - ly, rx - lx)
        crop = _crop_one(images[int(n)], cx, cy, side, angle, size)
        out[k] = crop * ((high - low) / 255.0) + low
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
