"""96x96 crops in [-1, 1], square with margin, optionally aligned by the eyes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from affbatch.faces.crops import BATCHED_TOLERANCE, CROP_MARGIN, CROP_SIZE, crop_faces, crop_faces_batched


def test_shape_range_and_content():
    image = np.zeros((200, 300, 3), np.uint8)
    image[50:150, 100:200] = (255, 0, 0)  # a red face-sized square
    crops = crop_faces(image[None], np.array([0]), np.array([[110, 60, 190, 140]]))
    assert crops.shape == (1, 3, CROP_SIZE, CROP_SIZE) and crops.dtype == np.float32
    assert crops.min() >= -1.0 and crops.max() <= 1.0
    centre = crops[0, :, 40:56, 40:56]
    np.testing.assert_allclose(centre.mean(axis=(1, 2)), [1.0, -1.0, -1.0], atol=1e-4)
    # The margin: the box is 80 px, the crop 100 px: 10 px of context on each side, which here
    # is still red (the square is 100 px): the whole crop is red.
    assert CROP_MARGIN * 80 == 100
    np.testing.assert_allclose(crops[0].mean(axis=(1, 2)), [1.0, -1.0, -1.0], atol=0.02)


def test_outside_the_frame_is_black():
    image = np.full((100, 100, 3), 255, np.uint8)
    crops = crop_faces(image[None], np.array([0]), np.array([[-50, 20, 30, 100]]))
    assert crops[0, :, :, :20].max() == pytest.approx(-1.0)  # left part: outside, black
    assert crops[0, :, 48, 80].min() == pytest.approx(1.0)  # right part: the white frame


def test_downscaling_is_antialiased():
    """A 1-pixel checkerboard face 400 px wide must average to grey, not alias into patterns."""
    yy, xx = np.mgrid[0:600, 0:600]
    image = (((yy + xx) % 2) * 255).astype(np.uint8)[:, :, None].repeat(3, axis=2)
    crops = crop_faces(image[None], np.array([0]), np.array([[100, 100, 500, 500]]))
    assert abs(crops.mean()) < 0.02 and crops.std() < 0.05


def test_alignment_levels_the_eyes():
    """A bar through both eyes at 30 degrees comes out horizontal."""
    image = np.zeros((300, 300, 3), np.uint8)
    angle = math.radians(30)
    t = np.linspace(-60, 60, 2000)
    xs, ys = (150 + t * math.cos(angle)).astype(int), (150 + t * math.sin(angle)).astype(int)
    for dy in range(-3, 4):
        image[ys + dy, xs] = 255
    eyes = np.array(
        [
            [150 - 30 * math.cos(angle), 150 - 30 * math.sin(angle)],
            [150 + 30 * math.cos(angle), 150 + 30 * math.sin(angle)],
        ]
    )
    landmarks = np.concatenate([eyes, np.full((3, 2), 150.0)])[None]
    boxes = np.array([[90, 90, 210, 210]])
    aligned = crop_faces(image[None], np.array([0]), boxes, landmarks, align=True)[0].mean(axis=0)
    upright = crop_faces(image[None], np.array([0]), boxes)[0].mean(axis=0)
    # Aligned: the bright pixels lie in the middle rows; not aligned: spread over many rows.
    rows_aligned = np.flatnonzero(aligned.max(axis=1) > 0)
    rows_upright = np.flatnonzero(upright.max(axis=1) > 0)
    assert rows_aligned.max() - rows_aligned.min() < 12
    assert rows_upright.max() - rows_upright.min() > 40
    assert abs(rows_aligned.mean() - CROP_SIZE / 2) < 3


def test_align_needs_landmarks():
    with pytest.raises(ValueError, match="landmarks"):
        crop_faces(np.zeros((1, 10, 10, 3), np.uint8), np.array([0]), np.array([[0, 0, 5, 5]]), align=True)


def test_several_faces_in_several_frames():
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    frames[0, :, :32] = 255
    frames[1, :, 32:] = 255
    crops = crop_faces(frames, np.array([1, 0]), np.array([[0, 0, 20, 20], [0, 0, 20, 20]]))
    assert crops[0].mean() < crops[1].mean()  # frame 1's left half is black, frame 0's white


def _mixed_faces(rng: np.random.Generator, n: int, height: int, width: int):
    """Boxes of many sizes (upscaled and shrunk), some cut by the border, with tilted eyes."""
    frame_of_face, boxes, landmarks = [], [], []
    for k in range(17):
        side = [6.0, 30.0, 95.0, 96.0, 160.0, 333.0][k % 6] * rng.uniform(0.9, 1.1)
        cx, cy = rng.uniform(-20, width + 20), rng.uniform(-20, height + 20)
        aspect = rng.uniform(0.7, 1.3)
        boxes.append([cx - side / 2, cy - side * aspect / 2, cx + side / 2, cy + side * aspect / 2])
        tilt = rng.uniform(-0.6, 0.6)
        dy = 0.2 * side * math.tan(tilt)
        eyes = [[cx - 0.2 * side, cy - dy], [cx + 0.2 * side, cy + dy]]
        landmarks.append(eyes + [[cx, cy]] * 3)
        frame_of_face.append(int(rng.integers(0, n)))
    return np.array(frame_of_face), np.array(boxes), np.array(landmarks)


@pytest.mark.parametrize("align", [False, True])
def test_batched_crops_agree_with_crop_faces(align):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (3, 241, 317, 3), dtype=np.uint8)
    frames[:, 100:140] = 255  # flat areas and edges, not only noise
    frame_of_face, boxes, landmarks = _mixed_faces(rng, 3, 241, 317)
    reference = crop_faces(frames, frame_of_face, boxes, landmarks, align=align)
    for images in (frames, torch.from_numpy(frames)):
        batched = crop_faces_batched(images, frame_of_face, boxes, landmarks, align=align)
        assert isinstance(batched, torch.Tensor) and batched.dtype == torch.float32
        assert batched.shape == reference.shape
        assert np.abs(batched.numpy() - reference).max() <= BATCHED_TOLERANCE


def test_batched_crops_of_nothing_and_of_one():
    frames = np.zeros((1, 20, 20, 3), np.uint8)
    assert crop_faces_batched(frames, np.zeros(0, int), np.zeros((0, 4))).shape == (0, 3, CROP_SIZE, CROP_SIZE)
    one = crop_faces_batched(frames, np.array([0]), np.array([[2, 2, 10, 10]]))
    assert one.shape == (1, 3, CROP_SIZE, CROP_SIZE) and float(one.max()) == -1.0


def test_batched_downscaling_is_antialiased():
    yy, xx = np.mgrid[0:600, 0:600]
    image = (((yy + xx) % 2) * 255).astype(np.uint8)[:, :, None].repeat(3, axis=2)
    crops = crop_faces_batched(image[None], np.array([0]), np.array([[100, 100, 500, 500]])).numpy()
    assert abs(crops.mean()) < 0.02 and crops.std() < 0.05


@pytest.mark.gpu
@pytest.mark.parametrize("align", [False, True])
def test_batched_crops_on_cuda_agree_with_crop_faces(align):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (3, 241, 317, 3), dtype=np.uint8)
    frame_of_face, boxes, landmarks = _mixed_faces(rng, 3, 241, 317)
    reference = crop_faces(frames, frame_of_face, boxes, landmarks, align=align)
    crops = crop_faces_batched(torch.from_numpy(frames).cuda(), frame_of_face, boxes, landmarks, align=align)
    assert crops.device.type == "cuda"
    # float32 matrix products (torch keeps TF32 off for them by default): the CPU's bound, with
    # room for a different summation order in cuBLAS.
    assert np.abs(crops.cpu().numpy() - reference).max() <= 10 * BATCHED_TOLERANCE


def test_batched_crops_in_groups_are_the_same(monkeypatch):
    """Faces go in groups that bound the memory of their float regions; the result does not change."""
    from affbatch.faces import crops as crops_module

    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (3, 241, 317, 3), dtype=np.uint8)
    frame_of_face, boxes, landmarks = _mixed_faces(rng, 3, 241, 317)
    whole = crop_faces_batched(frames, frame_of_face, boxes, landmarks, align=True)
    monkeypatch.setattr(crops_module, "REGION_BYTES", 1)  # one face per group
    grouped = crop_faces_batched(frames, frame_of_face, boxes, landmarks, align=True)
    assert np.abs(whole.numpy() - grouped.numpy()).max() <= BATCHED_TOLERANCE
    reference = crop_faces(frames, frame_of_face, boxes, landmarks, align=True)
    assert np.abs(grouped.numpy() - reference).max() <= BATCHED_TOLERANCE
