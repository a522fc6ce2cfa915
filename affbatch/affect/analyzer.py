"""What runs on the decoded frames of a video: detect, track, crop, affect.

``FaceAffectAnalyzer`` (an ``affect.base.Analyzer``), for each decoded batch: RetinaFace on
every frame (batched), the tracker in time order, 96x96 crops of every detection, and the
affect model's per-frame part on all crops of the batch at once. Sequence models then see
each track at the output rate: a source frame shown in two output frames (30 fps from a
slower video) appears twice in its track's sequence, as it did in the paper's 30 fps videos;
frames where a track's face was not detected are left out of its sequence (the model sees the
frames the face is in).

A batch of torch tensors (frames on a GPU) stays on its device: the detector pre- and
post-processes there, all its faces are cropped in one call (``crop_faces_batched``), features
and windows stay there; boxes come to the host for the tracker and valence/arousal at the end.
A host batch takes the host path (``crop_faces`` face by face: on the CPU it measured faster than
the batched crop, 9.1 vs 12.7 ms for 32 faces at 720p on one core).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from affbatch.affect.base import CropSink, ModelIdentity
from affbatch.affect.runners import FrameAffect, SequenceAffect, repeat_rows, to_host
from affbatch.faces.crops import crop_faces, crop_faces_batched
from affbatch.faces.tracking import FaceTracker
from affbatch.video.decoders.base import FrameBatch
from affbatch.video.probe import VideoInfo


class FaceAffectAnalyzer:
    """Detector + tracker + crops + affect model, for one video at a time.

    ``affect`` None: faces and tracks only (valence and arousal null), for callers that want
    the crops (``affbatch-train prepare``) or the tracks.
    """

    def __init__(self, detector, affect: FrameAffect | SequenceAffect | None, align: bool = False):
        self.detector = detector
        self.affect = affect
        self.align = align
        if affect is None:
            model, sha, runtime, precision = "faces", None, "none", "none"
            description = f"faces and tracks only, no affect model; faces: {detector.name}"
        else:
            model, sha = affect.identity.name, affect.identity.weights_sha256
            runtime, precision = engines_used(affect_engines(affect))
            description = f"{affect.identity.description}; faces: {detector.name}"
        # The detector's engine, not its arguments: on the CPU ``auto`` is decided per model.
        detector_runtime, detector_precision = engines_used(affect_engines(getattr(detector, "network", None)))
        detector_runtime = detector_runtime if detector_runtime != "unknown" else detector.runtime
        self.identity = ModelIdentity(
            model=model,
            model_sha256=sha,
            detector=detector.name,
            detector_sha256=detector.weights_sha256,
            runtime=f"detector: {detector_runtime}, affect: {runtime}",
            device=detector.device,
            description=description,
            precision=f"detector: {detector_precision}, affect: {precision}",
        )

    def start(self, info: VideoInfo, slots: np.ndarray, crop_sink: CropSink | None = None) -> None:
        self.tracker = FaceTracker()
        self.crop_sink = crop_sink
        # How many output frames show each source frame.
        self.repeats = np.bincount(slots, minlength=info.frames)
        self.rows: dict[str, list] = defaultdict(list)  # per detection: source, raw track, box, score
        self.frame_va: list[np.ndarray] = []  # FrameAffect: per detection
        self.streams: dict[int, object] = {}  # SequenceAffect: per raw track
        self.track_order: dict[int, list[int]] = defaultdict(list)  # raw track -> detection rows

    def add(self, batch: FrameBatch) -> None:
        detections = self.detector(batch.images)
        first_row = len(self.rows["source"])
        faces_frame, faces_box, faces_landmarks = [], [], []
        for i, found in enumerate(detections):
            ids = self.tracker.update(float(batch.time_s[i]), found.boxes)
            for j in range(len(found)):
                self.rows["source"].append(int(batch.source_index[i]))
                self.rows["track"].append(int(ids[j]))
                self.rows["box"].append(found.boxes[j])
                self.rows["score"].append(float(found.scores[j]))
                faces_frame.append(i)
                faces_box.append(found.boxes[j])
                faces_landmarks.append(found.landmarks[j])
        if not faces_frame or (self.affect is None and self.crop_sink is None):
            return
        crop = crop_faces_batched if batch.is_tensor else crop_faces
        crops = crop(
            batch.images,
            np.asarray(faces_frame),
            np.asarray(faces_box),
            np.asarray(faces_landmarks) if self.align else None,
            align=self.align,
        )
        if self.crop_sink is not None:
            self.crop_sink(np.arange(first_row, first_row + len(crops), dtype=np.int64), to_host(crops))
        if self.affect is None:
            return
        if isinstance(self.affect, FrameAffect):
            self.frame_va.append(self.affect(crops))
            return
        features = self.affect.features(crops)
        for k, row in enumerate(range(first_row, first_row + len(faces_frame))):
            track = self.rows["track"][row]
            stream = self.streams.setdefault(track, self.affect.new_stream())
            repeat = int(self.repeats[self.rows["source"][row]])
            self.affect.push(stream, repeat_rows(features[k : k + 1], repeat))
            self.track_order[track].append(row)

    def finish(self, slots: np.ndarray) -> dict[str, np.ndarray] | None:
        n = len(self.rows["source"])
        if n == 0:
            return None
        source = np.asarray(self.rows["source"], np.int64)
        raw_track = np.asarray(self.rows["track"], np.int64)
        boxes = np.asarray(self.rows["box"], np.float32).reshape(-1, 4)
        scores = np.asarray(self.rows["score"], np.float32)

        # Output frames showing each detection's source frame, in order.
        by_source = _output_frames_by_source(slots, len(self.repeats))
        out_frame, out_row, va_rows = [], [], []
        if not isinstance(self.affect, SequenceAffect):
            va = np.concatenate(self.frame_va) if self.affect is not None else np.full((n, 2), np.nan, np.float32)
            for row in range(n):
                frames = by_source[source[row]]
                out_frame += frames
                out_row += [row] * len(frames)
                va_rows.append(np.repeat(va[row : row + 1], len(frames), axis=0))
        else:
            for track, rows in self.track_order.items():
                outputs = self.affect.finish(self.streams[track])  # one per output frame, in order
                position = 0
                for row in rows:
                    frames = by_source[source[row]]
                    out_frame += frames
                    out_row += [row] * len(frames)
                    va_rows.append(outputs[position : position + len(frames)])
                    position += len(frames)
        if not out_row:
            return None
        va_all = np.concatenate(va_rows).astype(np.float32)
        out_row = np.asarray(out_row, np.int64)

        # Ids in order of appearance; faces appearing in the same frame, from left to right.
        kept = self.tracker.kept_ids()
        first_row = {t: int(np.flatnonzero(raw_track == t)[0]) for t in kept}
        renumber = {
            t: i for i, t in enumerate(sorted(kept, key=lambda t: (source[first_row[t]], boxes[first_row[t], 0], t)))
        }
        keep = np.isin(raw_track[out_row], list(kept))
        if not keep.any():
            return None
        out_row = out_row[keep]
        faces = {
            "frame": np.asarray(out_frame, np.int64)[keep],
            "detection": out_row,
            "track": np.array([renumber[int(t)] for t in raw_track[out_row]], np.int32),
            "x1": boxes[out_row, 0],
            "y1": boxes[out_row, 1],
            "x2": boxes[out_row, 2],
            "y2": boxes[out_row, 3],
            "det_score": scores[out_row],
            "valence": va_all[keep, 0],
            "arousal": va_all[keep, 1],
        }
        order = np.lexsort((faces["track"], faces["frame"]))
        return {k: v[order] for k, v in faces.items()}


def _output_frames_by_source(slots: np.ndarray, sources: int) -> list[list[int]]:
    by_source: list[list[int]] = [[] for _ in range(sources)]
    for k, s in enumerate(np.asarray(slots).tolist()):
        by_source[s].append(k)
    return by_source


def affect_engines(model) -> list:
    """The compiled engines a model runs (a FrameAffect's one, a SequenceAffect's two, a detector network's one)."""
    found = [getattr(model, name, None) for name in ("engine", "cnn", "temporal")]
    return [e for e in found if e is not None and hasattr(e, "runtime")]


def engines_used(found: list) -> tuple[str, str]:
    """(runtimes, precisions) of ``found``, each distinct value once, in order: ``openvino + onnxruntime``."""
    if not found:
        return "unknown", "unknown"

    def distinct(values: list[str]) -> str:
        return " + ".join(dict.fromkeys(values))

    return distinct([e.runtime for e in found]), distinct([getattr(e, "precision", "fp32") for e in found])
