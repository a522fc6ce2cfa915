"""Drawn faces whose visible features follow known valence/arousal trajectories (for ``demo``).

Each video shows one drawn face. Valence drives the mouth (curvature: a smile above 0, a frown
below; width: wider when positive; teeth and flushed cheeks in a smile, a furrow between the
brows in a frown) and the slant of the brows; arousal drives the eyes
(openness), the height of the brows and how far the mouth opens. Features are drawn in
colours relative to the skin (darker lips and brows), so that they show on every skin tone. Around that: an *identity*
(skin tone, face shape, hair colour and line, eye spacing), head motion (drift, bob, a small
roll and scale change), lighting (a slowly varying gain and a side light), a background per
video, pixel noise, and a face box as a detector draws it (brows to chin), jittered. The trajectories are
smooth random curves: sums of slow sinusoids, clipped to [-1, 1].

So the labels reach the images only through the drawn features, as in real data, and every
nuisance a model must ignore is there too. The faces are drawn, so no face detector is needed:
crops are cut by ``affbatch.faces.crops.crop_faces`` from the known (jittered) boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affbatch.video.framerate import PAPER_FPS

#: Frame size of the drawn videos (the face fills most of it, as in a close-up).
FRAME_SIZE = 144
#: The drawn videos' frame rate: the paper's.
FPS = int(PAPER_FPS)
#: The face box, as RetinaFace draws one: from above the brows (BOX_TOP face half-heights
#: above the centre) to the chin, and BOX_SIDE half-widths either side.
BOX_TOP = 0.6
BOX_SIDE = 0.95


@dataclass(frozen=True)
class Identity:
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    half_width: float  # face half-width in pixels
    aspect: float  # half-height / half-width
    eye_spacing: float  # eye centre distance from the middle, as a fraction of half-width
    hairline: float  # where the hair starts, in face-height units above the centre


def make_identities(count: int, seed: int) -> list[Identity]:
    """``count`` distinct identities (skin tones spread from light to dark)."""
    rng = np.random.default_rng([seed, 1])
    tones = np.linspace(0.0, 1.0, count)[rng.permutation(count)]
    identities = []
    for t in tones:
        light = np.array([236, 200, 176]) * (1 - t) + np.array([110, 72, 50]) * t
        identities.append(
            Identity(
                skin=tuple(light + rng.uniform(-12, 12, 3)),
                hair=tuple(rng.uniform(10, 120) * np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.7)])),
                half_width=float(rng.uniform(38, 46)),
                aspect=float(rng.uniform(1.12, 1.38)),
                eye_spacing=float(rng.uniform(0.34, 0.44)),
                hairline=float(rng.uniform(0.62, 0.8)),
            )
        )
    return identities


#: Periods (s) of the sinusoids the trajectories are made of: fast enough that one 80-frame
#: window (2.7 s) sees a good part of the range, so that a few thousand frames hold many
#: different expressions.
PERIODS_S = (1.5, 6.0)


def smooth_trajectory(rng: np.random.Generator, frames: int, fps: int = FPS) -> np.ndarray:
    """A smooth random curve in [-1, 1]: three sinusoids with periods in PERIODS_S, clipped."""
    t = np.arange(frames) / fps
    curve = np.full(frames, rng.uniform(-0.3, 0.3))
    for _ in range(3):
        period = rng.uniform(*PERIODS_S)
        curve += rng.uniform(0.25, 0.6) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return np.clip(curve, -1.0, 1.0)


def _soft(distance: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Coverage of a shape from a signed distance in pixels (negative inside), antialiased."""
    return np.clip(0.5 - distance / width, 0.0, 1.0)


def _blend(image: np.ndarray, mask: np.ndarray, colour) -> None:
    image += mask[..., None] * (np.asarray(colour, np.float32) - image)


def draw_face(
    identity: Identity,
    valence: float,
    arousal: float,
    centre: tuple[float, float],
    scale: float,
    roll: float,
    background: np.ndarray,
) -> np.ndarray:
    """One frame, float32 (H, W, 3) in 0..255, before lighting and noise."""
    h, w = background.shape[:2]
    image = background.copy()
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    a = identity.half_width * scale
    b = a * identity.aspect
    cos, sin = np.cos(roll), np.sin(roll)
    dx, dy = xs - centre[0], ys - centre[1]
    # Face coordinates: u across (-1..1 at the face's sides), v down (-1..1 top to chin).
    u = (cos * dx + sin * dy) / a
    v = (-sin * dx + cos * dy) / b
    px = 1.0 / a  # one pixel in u units (for antialiasing)

    radius = np.sqrt(u**2 + v**2)
    _blend(image, _soft((radius - 1.0) / px), identity.skin)
    # Hair: the top of the head above the hairline, inside a slightly larger ellipse.
    hair = _soft((np.sqrt(u**2 + (v * 0.95) ** 2) - 1.06) / px) * _soft((v + identity.hairline) / px)
    _blend(image, hair, identity.hair)

    # Features are drawn in colours relative to the skin, so that they contrast on every skin.
    skin = np.asarray(identity.skin, np.float32)
    # Eyes: openness from arousal (almost shut at -1, wide at +1).
    openness = 0.03 + 0.16 * (arousal + 1) / 2
    for side in (-1, 1):
        eu, ev = side * identity.eye_spacing, -0.1
        eye = np.sqrt(((u - eu) / 0.19) ** 2 + ((v - ev) / openness) ** 2)
        _blend(image, _soft((eye - 1.0) * 0.19 / px), (245, 245, 240))
        pupil = np.sqrt(((u - eu) / 0.08) ** 2 + ((v - ev) / min(openness, 0.08)) ** 2)
        _blend(image, _soft((pupil - 1.0) * 0.08 / px) * _soft((eye - 1.0) * 0.19 / px), (30, 25, 20))
        # Brows: higher with arousal; the inner end lower when valence is negative.
        lift = 0.08 + 0.1 * (arousal + 1) / 2
        inner = np.clip(-side * (u - eu) / 0.2, -1, 1)  # +1 at the end nearer the nose
        brow_v = ev - openness - lift - 0.12 * valence * inner
        brow = np.abs(v - brow_v) - 0.045
        inside = _soft((np.abs(u - eu) - 0.22) / px)
        _blend(image, _soft(brow / (px * identity.aspect)) * inside, skin * 0.3)

    # A furrow between the brows with negative valence.
    frown = max(-valence, 0.0)
    for side in (-1, 1):
        line = np.maximum(np.abs(u - side * 0.07) - 0.018, np.abs(v + 0.3) - 0.12)
        _blend(image, 0.8 * frown * _soft(line / px), skin * 0.45)
    # Cheeks: raised and flushed in a smile (positive valence).
    smile = max(valence, 0.0)
    for side in (-1, 1):
        cheek = np.sqrt(((u - side * 0.55) / 0.2) ** 2 + ((v - 0.22 + 0.08 * smile) / 0.14) ** 2)
        _blend(image, 0.6 * smile * _soft((cheek - 1.0) * 0.14 / px, 3.0), (215, 60, 70))
    # Mouth: a curve, smiling (corners up) with positive valence, wider too; open with arousal;
    # teeth show in a smile.
    half = 0.26 + 0.26 * (valence + 1) / 2
    curve = 0.32 * valence
    x = np.clip(u / half, -1.0, 1.0)
    centre_v = 0.46 + curve * (1 - x**2) - curve * 0.5
    gap = 0.01 + 0.09 * (arousal + 1) / 2 + 0.05 * smile
    within = _soft((np.abs(u) - half) / px)
    lips = (np.abs(v - centre_v) - (gap + 0.045)) / (px * identity.aspect)
    _blend(image, _soft(lips) * within, skin * np.array([0.75, 0.35, 0.4]))
    opening = (np.abs(v - centre_v) - gap) / (px * identity.aspect)
    inner = _soft(opening) * within * _soft((np.abs(u) - half * 0.85) / px)
    _blend(image, inner, (25, 8, 12))
    teeth = (v - centre_v + gap) / (px * identity.aspect) - 0.9 * smile * gap / (px * identity.aspect)
    _blend(image, inner * _soft(teeth) * min(1.0, 2 * smile), (240, 238, 225))
    return image


@dataclass
class DrawnVideo:
    frames: np.ndarray  # uint8 (n, H, W, 3)
    boxes: np.ndarray  # float32 (n, 4): the jittered face box, x1, y1, x2, y2
    labels: np.ndarray  # float32 (n, 2): valence, arousal


def draw_video(identity: Identity, frames: int, rng: np.random.Generator, size: int = FRAME_SIZE) -> DrawnVideo:
    """A video of ``identity`` with random trajectories, motion, lighting and background."""
    valence, arousal = smooth_trajectory(rng, frames), smooth_trajectory(rng, frames)
    t = np.arange(frames) / FPS
    # Background: a colour gradient with a few soft blobs, fixed per video.
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(20, 230, 3), rng.uniform(20, 230, 3)
    background = c0 + (c1 - c0) * (xs * rng.uniform(0.2, 1) + ys * rng.uniform(0.2, 1))[..., None] / 2
    for _ in range(3):
        bx, by, br = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        blob = np.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / br**2)
        background += blob[..., None] * rng.uniform(-40, 40, 3)
    background = background.clip(0, 255).astype(np.float32)

    def wave(amplitude: float, lo: float = 3.0, hi: float = 9.0) -> np.ndarray:
        return amplitude * np.sin(2 * np.pi * t / rng.uniform(lo, hi) + rng.uniform(0, 2 * np.pi))

    cx = size / 2 + wave(7.0) + wave(2.0, 1.0, 2.0)
    cy = size / 2 + 4 + wave(5.0) + wave(1.5, 0.7, 1.5)
    scale = 1.0 + wave(0.05)
    roll = wave(0.10)
    gain = 1.0 + wave(0.1, 4.0, 12.0)
    side = wave(0.15, 5.0, 15.0)
    noise = rng.uniform(2.0, 6.0)
    out = np.empty((frames, size, size, 3), np.uint8)
    boxes = np.empty((frames, 4), np.float32)
    for k in range(frames):
        image = draw_face(identity, valence[k], arousal[k], (cx[k], cy[k]), scale[k], roll[k], background)
        light = gain[k] * (1 + side[k] * (xs - 0.5))
        image = image * light[..., None] + rng.normal(0, noise, image.shape)
        out[k] = image.clip(0, 255).astype(np.uint8)
        # The box a face detector gives: brows to chin, cheek to cheek (not the hair), jittered.
        a = identity.half_width * scale[k]
        b = a * identity.aspect
        top, bottom = cy[k] - BOX_TOP * b, cy[k] + b
        jitter = rng.normal(0, 1.5, 4)
        boxes[k] = (
            cx[k] - BOX_SIDE * a + jitter[0],
            top + jitter[1],
            cx[k] + BOX_SIDE * a + jitter[2],
            bottom + jitter[3],
        )
    return DrawnVideo(out, boxes, np.stack([valence, arousal], axis=1).astype(np.float32))
