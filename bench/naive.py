"""The naive baseline: the same models driven the way single-video tools drive them.

What ``affbatch score`` does and this does not:

* the 30 fps selection before conversion: here every frame is decoded *and* converted to RGB
  (plain PyAV, ``container.decode``, its default threading);
* the shrink before detection: here RetinaFace sees the full frame
  (``DetectorOptions(max_side=max(height, width))``);
* batching: here one frame goes through the detector at a time, and one face at a time through
  the affect model (batch 1 on the same runtime as the pipeline: ONNX Runtime on the CPU, torch
  on CUDA, so the ratio measures the pipeline's structure, not a runtime choice);
* overlap: here nothing runs in the background (no decoding thread), each step waits for the last;
* for the sequence model, windows: here each frame's output comes from running the recurrent part
  over the track's last 80 features (the training length), re-run at every frame.

Same components otherwise: ``FaceDetector``, ``FaceTracker``, ``crop_faces``, the prior and
``vggface-gru-attn`` compiled by ``engines`` as ``affbatch score`` compiles them.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from affbatch.affect.runners import FrameAffect, SequenceAffect
from affbatch.faces.crops import crop_faces
from affbatch.faces.detector import DetectorOptions, FaceDetector
from affbatch.faces.tracking import FaceTracker

ZERO = np.zeros(1, np.int64)


@dataclass
class NaiveScorer:
    """Scores one video at a time, frame by frame and face by face.

    ``affect``: a ``FrameAffect`` (the prior) or a ``SequenceAffect`` (vggface-gru-attn), built
    by the caller with the runtime to use. Detectors at full resolution are built per frame size
    and kept (model loading is not part of a video's time, as in ``affbatch score``).
    """

    affect: FrameAffect | SequenceAffect
    runtime: str = "onnxruntime"
    device: str = "cpu"
    #: the detector's precision (the pipeline's for the same model: see ``bench.faces.naive_scorer``)
    precision: str = "fp32"
    detectors: dict[int, FaceDetector] = field(default_factory=dict)

    def detector(self, height: int, width: int) -> FaceDetector:
        side = max(height, width, 32)
        if side not in self.detectors:
            self.detectors[side] = FaceDetector.default(
                options=DetectorOptions(max_side=side), runtime=self.runtime, device=self.device,
                precision=self.precision,
            )  # fmt: skip
        return self.detectors[side]

    def __call__(self, path: Path, limit: int | None = None) -> dict:
        """Score ``path`` (its first ``limit`` frames): frames, faces, seconds and the outputs."""
        t0 = time.perf_counter()
        tracker = FaceTracker()
        windows: dict[int, deque] = {}
        sequential = isinstance(self.affect, SequenceAffect)
        frames = faces = 0
        outputs = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if limit is not None and frames >= limit:
                    break
                image = frame.to_ndarray(format="rgb24")[None]
                found = self.detector(image.shape[1], image.shape[2])(image)[0]
                t = float(frame.time) if frame.time is not None else frames / 30.0
                ids = tracker.update(t, found.boxes)
                for j in range(len(found)):
                    crop = crop_faces(image, ZERO, found.boxes[j : j + 1])
                    if sequential:
                        features = self.affect.features(crop)[0]
                        window = windows.setdefault(int(ids[j]), deque(maxlen=self.affect.window))
                        window.append(features)
                        va = self.affect.temporal(np.stack(window)[None])[0][0, -1]
                    else:
                        va = self.affect(crop)[0]
                    outputs.append((frames, int(ids[j]), float(va[0]), float(va[1])))
                    faces += 1
                frames += 1
        return {"frames": frames, "faces": faces, "seconds": time.perf_counter() - t0, "outputs": outputs}
