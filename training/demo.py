"""``affbatch-train demo --out DIR``: the whole training path on drawn faces, on a CPU, in minutes.

1. Draws a data set (``training.synthetic_faces``): videos of drawn faces whose mouth, eyes and
   brows follow known valence/arousal trajectories, with head motion, lighting, backgrounds and
   noise; several identities. Training and validation videos are disjoint, and the validation
   set includes identities never seen in training. It is written as a crop store
   (``DIR/store``, splits ``train`` and ``validation``) directly: the faces are drawn, so the
   crops come from ``crop_faces`` on the known boxes (jittered as a detector's), no detector.
2. Fits ``vggface-gru-attn`` with strategy (i) (``DIR/run``): CNN frozen, RNN + attention +
   output trained. No pre-trained VGG-Face weights ship with affbatch, so the VGG-16 trunk is
   randomly initialised and frozen: a random-feature extractor. Its fc6 features are computed
   once per frame and cached, so epochs cost only the GRU. Validation CCC (challenge protocol)
   after every epoch.
3. Optionally a short strategy (iii) (``--finetune-steps``: all layers trained from the best
   (i) checkpoint; slow on a CPU: the VGG-16 forward and backward of 320 frames per step).
4. Evaluates the best checkpoint on the held-out videos and exports it to ``DIR/model``, a
   folder ``affbatch score --model`` takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affbatch.faces.crops import crop_faces
from affbatch.models.vggface_gru_attn import SEQUENCE_LENGTH
from training.store import CropStore, StoreWriter, crops_to_uint8
from training.synthetic_faces import FPS, draw_video, make_identities

Report = Callable[[str], None]


@dataclass
class DemoOptions:
    """Sizes chosen to learn well within 15 minutes on 2 CPU cores (see the README)."""

    out: Path
    seed: int = 0
    train_videos: int = 80
    val_videos: int = 4
    test_videos: int = 4
    frames: int = SEQUENCE_LENGTH  # per training video: one training sequence (2.7 s at 30 fps)
    eval_frames: int = 2 * SEQUENCE_LENGTH  # per validation or test video
    epochs: int = 20
    max_steps: int | None = None
    finetune_steps: int = 0
    device: str = "cpu"
    log_every: int = 100
    calibration_frames: int = 128

    def __post_init__(self) -> None:
        self.out = Path(self.out)


@dataclass
class DemoResult:
    out: Path
    model: Path
    validation: dict  # the best epoch's, on the validation videos (which chose it)
    test: dict  # the exported model's, on the test videos (used for nothing else)
    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0


SPLITS = ("train", "validation", "test")


def _video_plan(options: DemoOptions) -> list[tuple[str, str, int, int]]:
    """(name, split, identity, frames) of every video. Every video has an identity of its own:
    many short training videos of many identities teach the model to look past identity, and
    validation and test show people never seen in training (as Aff-Wild2's subject-independent
    splits), the test ones not even in validation."""
    counts = {"train": options.train_videos, "validation": options.val_videos, "test": options.test_videos}
    plan = []
    for split in SPLITS:
        frames = options.frames if split == "train" else options.eval_frames
        plan += [(f"demo_{split}_{k:03d}", split, len(plan) + k, frames) for k in range(counts[split])]
    return plan


def write_demo_store(folder: Path, options: DemoOptions, report: Report = print) -> CropStore:
    plan = _video_plan(options)
    identities = make_identities(len(plan), options.seed)
    t0 = time.perf_counter()
    settings = {"source": "synthetic (training.synthetic_faces)", "fps": str(FPS), "detector": None}
    with StoreWriter(folder, {**settings, "seed": options.seed}, overwrite=True) as writer:
        for number, (name, split, identity, frames) in enumerate(plan):
            rng = np.random.default_rng([options.seed, 2, number])
            video = draw_video(identities[identity], frames, rng)
            n = len(video.frames)
            crops = crops_to_uint8(crop_faces(video.frames, np.arange(n), video.boxes))
            frame = np.arange(n)
            meta = {"video": name, "track": 0, "label": name, "split": split, "valid_labels": n, "missing": 0}
            columns = {"frame": frame, "source_frame": frame, "crop": crops, "valence": video.labels[:, 0]}
            columns.update(
                arousal=video.labels[:, 1], **dict(zip(("x1", "y1", "x2", "y2"), video.boxes.T, strict=True))
            )
            writer.add_track(meta, columns)
            writer.add_video({"video": name, "status": "ok", "error": None, "frames": n, "identity": identity})
    report(
        f"drew {options.train_videos} training videos of {options.frames} frames, {options.val_videos} validation and "
        f"{options.test_videos} test videos of {options.eval_frames}, each of a different identity, "
        f"in {time.perf_counter() - t0:.1f} s: {folder}"
    )
    return CropStore(folder)


def make_initial_model(store: CropStore, folder: Path, options: DemoOptions, report: Report = print) -> Path:
    """vggface-gru-attn with a random, calibrated VGG-16 trunk (see calibrate_random_trunk), saved
    as an untrained checkpoint for ``fit --init-from``."""
    import torch

    from affbatch.models.checkpoint import save_checkpoint
    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    torch.manual_seed(options.seed)
    model = VGGFaceGRUAttention().eval()
    tracks = store.select("train")
    rng = np.random.default_rng([options.seed, 3])
    picks = sorted(rng.choice(sum(t.rows for t in tracks), options.calibration_frames, replace=False))
    crops, offset = [], 0
    for t in tracks:
        crops += [store.crops(t, p - offset, p - offset + 1) for p in picks if offset <= p < offset + t.rows]
        offset += t.rows
    t0 = time.perf_counter()
    calibrate_random_trunk(model.cnn, np.concatenate(crops))
    note = (
        "random VGG-16 trunk (no pre-trained weights ship with affbatch), each layer centred and scaled on "
        f"{options.calibration_frames} training crops (data-dependent initialisation, no labels used)"
    )
    save_checkpoint(model, folder, trained=False, extra={"init": {"seed": options.seed, "note": note}})
    report(f"random VGG-16 trunk calibrated on {len(picks)} training crops in {time.perf_counter() - t0:.1f} s")
    return folder


def run_demo(options: DemoOptions, report: Report = print) -> DemoResult:
    from affbatch.models.checkpoint import load_checkpoint
    from training.export import export_checkpoint
    from training.loop import FitOptions, fit
    from training.validate import validate

    t0 = time.perf_counter()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    store = write_demo_store(out / "store", options, report)
    init = make_initial_model(store, out / "init", options, report)
    run_i = out / "run"
    result = fit(
        FitOptions(
            train=store.folder,
            out=run_i,
            strategy="i",
            init_from=init,
            epochs=options.epochs,
            max_steps=options.max_steps,
            seed=options.seed,
            device=options.device,
            log_every=options.log_every,
            resume=(run_i / "train-state.safetensors").exists(),
        ),
        report,
    )
    best, curve = result.best, result.curve
    best_mean = (result.best_validation or {}).get("mean")
    if options.finetune_steps:
        report(f"strategy iii: all layers trained from the best strategy-i checkpoint, {options.finetune_steps} steps")
        run_iii = out / "run-iii"
        result = fit(
            FitOptions(
                train=store.folder,
                out=run_iii,
                strategy="iii",
                init_from=best,
                max_steps=options.finetune_steps,
                seed=options.seed,
                device=options.device,
                log_every=1,
                resume=(run_iii / "train-state.safetensors").exists(),
            ),
            report,
        )
        mean = (result.best_validation or {}).get("mean")
        if mean is not None and (best_mean is None or mean > best_mean):
            best, best_mean = result.best, mean
        curve = curve + result.curve
    exported = export_checkpoint(best, out / "model")
    validation = exported.config["training"]["validation"]
    model, _ = load_checkpoint(exported.path, options.device if options.device != "auto" else "cpu")
    test = validate(model, store, store.select("test"), str(next(model.parameters()).device)).overall.to_json()
    seconds = time.perf_counter() - t0
    report(
        f"demo: CCC on the {options.test_videos} test videos (never used in training or to choose the epoch; "
        f"challenge protocol): valence {test['valence']:.3f}, arousal {test['arousal']:.3f}, mean {test['mean']:.3f} "
        f"over {test['frames']} frames; on the validation videos: mean {validation['mean']:.3f}. "
        f"Model: {out / 'model'} ({seconds:.0f} s in all)"
    )
    return DemoResult(out, out / "model", validation, test, curve, seconds)


def calibrate_random_trunk(cnn, crops: np.ndarray) -> None:
    """Data-dependent initialisation of a random VGG trunk (Krähenbühl et al. 2016, "Data-dependent
    initializations of convolutional neural networks"; Mishkin & Matas 2016, "All you need is a
    good init").

    Layer by layer (each convolution, then fc6), weights and biases are rescaled and shifted so
    that each output channel has mean 0 and variance 1 over ``crops`` (uint8 training images;
    no labels). Why: with plain random weights, every image's pool5 map shares a large common
    component, so each fc6 unit is almost constant over images (on for all or off for all) and
    the features barely move with the face (measured: per-unit spread 0.08 around a mean of
    0.27); centred units split the images between their on and off sides, and the frozen random
    features follow the face's changes (spread 0.58 around 0.39).
    """
    import torch

    from training.data import to_model_input

    x = to_model_input(torch.from_numpy(np.ascontiguousarray(crops))[None])[0]
    with torch.no_grad():
        for layer in [*cnn.features, cnn.fc6]:
            if isinstance(layer, torch.nn.Linear):
                x = torch.flatten(x, 1)
            if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear):
                out = layer(x)
                dims = (0, 2, 3) if out.ndim == 4 else (0,)
                mean, std = out.mean(dim=dims), out.std(dim=dims).clamp_min(1e-6)
                layer.weight.div_(std.reshape((-1,) + (1,) * (layer.weight.ndim - 1)))
                layer.bias.sub_(mean).div_(std)
            x = layer(x)
