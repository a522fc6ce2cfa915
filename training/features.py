"""A frozen CNN's per-frame features, computed once and cached on disk (strategy i).

With the CNN frozen (strategy i), its output for a crop never changes during training, and it
is by far the expensive part (VGG-16 at 96x96: 5.7 GFLOPs a frame against ~0.01 for the GRU).
Computing it once per row turns every later epoch into GRU-only work. The frozen CNN runs in
eval mode, so its output is a function of the crop alone; the dropout it ends with (VGG's
after fc6) is applied to the cached features at training time
(``training.models.trailing_dropout``).

The cache is one float32 ``.npy`` (rows x width, memory-mapped on read) per (CNN weights, store,
tracks), named by a hash of the three, so a changed CNN or store never reuses stale features.
Size: 16 KB a row for fc6 (4096 floats): 26 GB for Aff-Wild2's 1.6 M training frames.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from affbatch.faces.crops import CROP_SIZE
from affbatch.files import atomic_path
from training.data import to_model_input
from training.store import CropStore, TrackEntry

#: Crops per CNN call while caching.
CACHE_BATCH = 64


def module_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state (names, dtypes, shapes and bytes): identifies its weights."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Cached features of some tracks of a store: ``rows(entry, start, stop)`` -> float32 (n, F)."""

    def __init__(self, path: Path, offsets: dict[int, int]):
        self.path = Path(path)
        self.array = np.load(self.path, mmap_mode="r")
        self.offsets = offsets
        self.width = int(self.array.shape[1])

    def track(self, entry: TrackEntry) -> np.ndarray:
        at = self.offsets[entry.index]
        return self.array[at : at + entry.rows]

    def rows(self, entry: TrackEntry, start: int, stop: int) -> np.ndarray:
        at = self.offsets[entry.index]
        return np.array(self.array[at + start : at + stop])


def build_feature_cache(
    store: CropStore,
    tracks: Sequence[TrackEntry],
    cnn: torch.nn.Module,
    folder: Path,
    device: str = "cpu",
    report: Callable[[str], None] | None = None,
    batch_size: int = CACHE_BATCH,
) -> FeatureCache:
    """The features of every row of ``tracks``, from ``folder`` if cached, else computed now."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    offsets, total = {}, 0
    for entry in tracks:
        offsets[entry.index] = total
        total += entry.rows
    manifest = (store.folder / "manifest.json").read_bytes()
    key = hashlib.sha256(
        f"{module_sha256(cnn)}:{hashlib.sha256(manifest).hexdigest()}:{[t.index for t in tracks]}".encode()
    ).hexdigest()[:20]
    path = folder / f"features-{key}.npy"
    if path.is_file():
        return FeatureCache(path, offsets)

    was_training = cnn.training
    cnn.eval()
    # channels-last convolutions run ~25% faster on the CPU (oneDNN) and on GPUs; restored after.
    cnn.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        blank = torch.zeros(1, 1, CROP_SIZE, CROP_SIZE, 3, dtype=torch.uint8)
        width = cnn(to_model_input(blank).flatten(0, 1).to(device)).shape[1]
    t0 = last = time.perf_counter()
    done = 0
    try:
        with atomic_path(path) as tmp, torch.inference_mode():
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, width))
            for entry in tracks:
                for a in range(0, entry.rows, batch_size):
                    b = min(a + batch_size, entry.rows)
                    crops = torch.from_numpy(store.crops(entry, a, b)).to(device)
                    x = to_model_input(crops[None])[0].contiguous(memory_format=torch.channels_last)
                    array[offsets[entry.index] + a : offsets[entry.index] + b] = cnn(x).float().cpu().numpy()
                    done += b - a
                    now = time.perf_counter()
                    if report and now - last > 10:
                        rate = done / (now - t0)
                        left = (total - done) / rate
                        report(f"caching CNN features: {done}/{total} frames, {rate:.0f}/s, {left:.0f} s left")
                        last = now
            array.flush()
            del array
    finally:
        cnn.to(memory_format=torch.contiguous_format)
        cnn.train(was_training)
    (folder / f"features-{key}.json").write_text(
        json.dumps({"store": str(store.folder), "tracks": len(tracks), "rows": total, "width": width}) + "\n"
    )
    if report:
        report(f"cached CNN features of {total} frames in {time.perf_counter() - t0:.1f} s: {path}")
    return FeatureCache(path, offsets)
