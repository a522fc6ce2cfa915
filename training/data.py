"""Training batches from a crop store: 4 sequences x 80 consecutive frames, each of one track.

The paper (Section IV-A): "the batch size was set to 320 (consisting of 4 different sequences,
each one having 80 consecutive frames)". A sequence is 80 consecutive rows of one track (the
frames the face is in, at the store's output rate: what ``affbatch score`` feeds the model),
every one of them with a valid label, so that the loss sees no made-up targets.

**Sampling.** For each epoch, every maximal run of labelled rows of every track is cut into
back-to-back windows of 80 from a random offset in [0, 80) (so that, over epochs, every frame
is seen at every position of a window), and all windows of all tracks are shuffled and grouped
4 by 4; the last incomplete batch is dropped. Everything is a function of ``(seed, epoch)``:
the plan of epoch e is the same on any machine and in any run, so the sampler's position is
just ``(epoch, batch)``, and resuming at batch b of epoch e replays batches b, b+1, ... of the
same plan (:meth:`SequenceSampler.batches`).

**Inputs.** Crops stay uint8 (B, T, 96, 96, 3) until the batch is on its device, where
:func:`to_model_input` turns them into float (B, T, 3, 96, 96) in [-1, 1]: a quarter of the
bytes to move. With a frozen CNN (strategy i) the inputs are its cached features instead
(``training.features``). Batches are assembled in a background thread, one or two ahead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from affbatch.faces.crops import PIXEL_RANGE
from affbatch.models.vggface_gru_attn import SEQUENCE_LENGTH
from training.store import CropStore, TrackEntry

#: "4 different sequences, each one having 80 consecutive frames" (Section IV-A); the length is
#: the model module's SEQUENCE_LENGTH, defined once there.
BATCH_SEQUENCES = 4

__all__ = ["BATCH_SEQUENCES", "SEQUENCE_LENGTH", "Batch", "BatchLoader", "SequenceSampler", "to_model_input"]


def labelled_runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal [start, stop) runs of rows whose valence and arousal are both labelled (finite)."""
    ok = np.isfinite(labels).all(axis=1).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok, [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


class SequenceSampler:
    """Which windows each batch of each epoch holds; a pure function of ``(seed, epoch)``.

    ``labels[i]``: float (rows, 2) of ``tracks[i]``, NaN where unlabelled. Windows are
    ``(i, start)``: rows ``start .. start + length - 1`` of ``tracks[i]``.
    """

    def __init__(
        self,
        labels: Sequence[np.ndarray],
        seed: int,
        batch_sequences: int = BATCH_SEQUENCES,
        length: int = SEQUENCE_LENGTH,
    ):
        if batch_sequences < 1 or length < 1:
            raise ValueError(f"batch_sequences {batch_sequences}, length {length}: must be at least 1")
        self.seed, self.batch_sequences, self.length = int(seed), batch_sequences, length
        self.runs = [(i, a, b) for i, lab in enumerate(labels) for a, b in labelled_runs(lab) if b - a >= length]

    @property
    def frames(self) -> int:
        """Labelled frames in runs long enough for a window."""
        return sum(b - a for _, a, b in self.runs)

    def windows(self, epoch: int) -> np.ndarray:
        """int64 (n, 2) ``(track, start)`` of epoch ``epoch``, in batch order."""
        rng = np.random.default_rng([self.seed, epoch])
        parts = []
        for i, a, b in self.runs:
            offset = int(rng.integers(0, min(self.length, b - a - self.length + 1)))
            starts = np.arange(a + offset, b - self.length + 1, self.length, dtype=np.int64)
            parts.append(np.stack([np.full_like(starts, i), starts], axis=1))
        if not parts:
            return np.zeros((0, 2), np.int64)
        windows = np.concatenate(parts)
        return windows[rng.permutation(len(windows))]

    def batches_in(self, epoch: int) -> int:
        return len(self.windows(epoch)) // self.batch_sequences

    def batches(self, epoch: int, start: int = 0) -> Iterator[np.ndarray]:
        """The batches of ``epoch`` from batch ``start`` on, each int64 (batch_sequences, 2)."""
        windows = self.windows(epoch)
        for b in range(start, len(windows) // self.batch_sequences):
            yield windows[b * self.batch_sequences : (b + 1) * self.batch_sequences]


class RowSource(Protocol):
    """Per-row model inputs of a track: crops (uint8 (n, 96, 96, 3)) or features (float (n, F))."""

    def rows(self, entry: TrackEntry, start: int, stop: int) -> np.ndarray: ...


class CropRows:
    """Crops straight from the store (memory-mapped)."""

    def __init__(self, store: CropStore):
        self.store = store

    def rows(self, entry: TrackEntry, start: int, stop: int) -> np.ndarray:
        return self.store.crops(entry, start, stop)


@dataclass
class Batch:
    """``inputs``: uint8 (B, T, 96, 96, 3) crops or float32 (B, T, F) features; ``labels``:
    float32 (B, T, 2) valence, arousal; ``windows``: the (track, start) of each sequence."""

    inputs: torch.Tensor
    labels: torch.Tensor
    windows: np.ndarray


def to_model_input(inputs: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float32 (B, T, 3, H, W) in PIXEL_RANGE; float inputs pass through."""
    if inputs.dtype != torch.uint8:
        return inputs
    low, high = PIXEL_RANGE
    return inputs.permute(0, 1, 4, 2, 3).float().mul_((high - low) / 255.0).add_(low)


class BatchLoader:
    """Assembles the sampler's batches from a row source, in a background thread."""

    def __init__(
        self, sampler: SequenceSampler, tracks: Sequence[TrackEntry], labels: Sequence[np.ndarray], source: RowSource
    ):
        self.sampler, self.tracks, self.labels, self.source = sampler, list(tracks), list(labels), source

    def assemble(self, windows: np.ndarray) -> Batch:
        length = self.sampler.length
        inputs, labels = [], []
        for i, start in windows.tolist():
            inputs.append(self.source.rows(self.tracks[i], start, start + length))
            labels.append(self.labels[i][start : start + length])
        return Batch(torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(labels).astype(np.float32)), windows)

    def epoch(self, epoch: int, start: int = 0, prefetch: int = 2) -> Iterator[Batch]:
        """Batches ``start, start + 1, ...`` of ``epoch`` (see :class:`SequenceSampler`)."""
        batches = (self.assemble(w) for w in self.sampler.batches(epoch, start))
        if prefetch <= 0:
            return batches
        from affbatch.pipeline import prefetch as in_background

        return in_background(batches, depth=prefetch)
