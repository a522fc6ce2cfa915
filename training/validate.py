"""Validation CCC with the challenges' protocol, on a crop store.

Predictions are made as ``affbatch score`` makes them: each track in overlapping windows of
80 from a zero state (``vggface_gru_attn.predict_track``), over *all* its rows, labelled or not.
Then, as ``affbatch eval``: a source frame shown in several output frames is one sample (its
predictions averaged), frames without a valid label are left out, and each dimension's CCC is
computed over the concatenation of the valid frames of all label files (not averaged per
video). Valid labelled frames without a crop (no face found there) are counted as ``missing``
and reported, never scored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from affbatch.evaluation.evaluate import Scores, scores_of
from affbatch.models.vggface_gru_attn import predict_track
from training.data import to_model_input
from training.features import FeatureCache
from training.store import CropStore, TrackEntry

#: Crops per CNN call while predicting.
PREDICT_BATCH = 64


@dataclass
class Validation:
    overall: Scores
    labels: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**self.overall.to_json(), "labels": self.labels}


class _Crops:
    """A track's crops as float (n, 3, 96, 96) in [-1, 1], read from the store slice by slice."""

    def __init__(self, store: CropStore, entry: TrackEntry):
        self.store, self.entry = store, entry

    def __len__(self) -> int:
        return self.entry.rows

    def __getitem__(self, item: slice) -> np.ndarray:
        start, stop, _ = item.indices(self.entry.rows)
        crops = torch.from_numpy(self.store.crops(self.entry, start, stop))
        return to_model_input(crops[None])[0].numpy()


def predict(
    model: torch.nn.Module,
    store: CropStore,
    entry: TrackEntry,
    device: str = "cpu",
    cache: FeatureCache | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """float32 (rows, 2) valence, arousal for every row of ``entry``, as ``affbatch score`` would."""
    amp = (
        torch.autocast("cuda", dtype=autocast_dtype)
        if autocast_dtype is not None and str(device).startswith("cuda")
        else contextlib.nullcontext()
    )

    def features(x: np.ndarray) -> np.ndarray:
        if cache is not None:
            return x
        with amp:
            return model.cnn(torch.from_numpy(x).to(device)).float().cpu().numpy()

    def temporal(f: np.ndarray) -> np.ndarray:
        with amp:
            return model.temporal(torch.from_numpy(np.ascontiguousarray(f)).to(device))[0].float().cpu().numpy()

    frames = cache.track(entry) if cache is not None else _Crops(store, entry)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return predict_track(frames, features, temporal, batch_size=PREDICT_BATCH)
    finally:
        model.train(was_training)


def score_predictions(store: CropStore, tracks: Sequence[TrackEntry], predictions: dict[int, np.ndarray]) -> Validation:
    """The protocol's CCCs of ``predictions[entry.index]`` (rows, 2) against the store's labels."""
    parts, missing, result = [], 0, Validation(Scores(None, None, 0, 0))
    for entry in tracks:
        labels = store.labels(entry)
        source = store.column(entry, "source_frame")
        valid = np.isfinite(labels).all(axis=1)
        # One sample per labelled source frame: its predictions averaged (30 fps repeats a frame).
        frames, first, inverse = np.unique(source[valid], return_index=True, return_inverse=True)
        count = np.bincount(inverse, minlength=len(frames)).astype(np.float64)
        rows = predictions[entry.index][valid].astype(np.float64)
        pred = np.stack([np.bincount(inverse, rows[:, d], len(frames)) / count for d in (0, 1)], axis=1)
        true = labels[valid][first].astype(np.float64)
        part = (true[:, 0], pred[:, 0], true[:, 1], pred[:, 1])
        result.labels[entry.name] = {
            "video": entry.video,
            "track": entry.track,
            **scores_of(*part, entry.missing).to_json(),
        }
        parts.append(part)
        missing += entry.missing
    if parts:
        result.overall = scores_of(*(np.concatenate(c) for c in zip(*parts, strict=True)), missing)
    else:
        result.overall = Scores(None, None, 0, missing)
    return result


def validate(
    model: torch.nn.Module,
    store: CropStore,
    tracks: Sequence[TrackEntry],
    device: str = "cpu",
    cache: FeatureCache | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Validation:
    """Predict every track of ``tracks`` and score the predictions with the protocol."""
    predictions = {e.index: predict(model, store, e, device, cache, autocast_dtype) for e in tracks}
    return score_predictions(store, tracks, predictions)
