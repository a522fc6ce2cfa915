"""``affbatch-train fit``: the paper's training (Section IV-A), resumable step for step.

Strategies (Section III-B: "(i) keep the CNN weights fixed to their pre-trained values and train
only the RNN layers; (ii) randomly initialize the RNN part and train the whole CNN-RNN; (iii)
initialize the RNN part with the best performing model of (i) and then train the whole CNN-RNN"):

* ``i``: the CNN's weights are frozen and everything after it trains (RNN, attention, output
  layer). The CNN runs in eval mode; the dropout it ends with (VGG's after fc6) stays active in
  training (``training.models.trailing_dropout``). Its features are computed once and cached
  (``training.features``).
  The CNN comes from ``--backbone`` (pre-trained weights) or ``--init-from`` (a checkpoint);
  with neither it stays at its random initialisation, which the run says.
* ``ii``: all trained; the CNN as in (i), the temporal part freshly initialised (even when
  ``--init-from`` is given: only its CNN is taken).
* ``iii``: all trained, starting from every weight of ``--init-from`` (the best (i) checkpoint).
  Also the way to fine-tune on RECOLA from an Aff-Wild2 checkpoint (``--init-from``, and
  ``--strategy i`` to train the temporal part only).

Per step: batch of 4 x 80 frames (``training.data``), loss ``1 - (CCC_v + CCC_a) / 2`` over the
batch (``training.losses``), Adam with the rate ``1e-3 * 0.97 ** (step // 400)``
(``training.schedule``). Per epoch: validation CCC with the challenges' protocol
(``training.validate``); the best by mean CCC is written to ``OUT/best/`` with
``affbatch.models.checkpoint.save_checkpoint``, a folder ``affbatch score --model`` takes.

Output folder: ``best/`` (checkpoint), ``train-state.safetensors`` (resume), ``log.csv``,
``run.json`` (the options), ``features/`` (strategy i's cache), ``tensorboard/`` if tensorboard
is installed. ``--resume`` continues from the state file with the same weights, optimiser, RNG
states and sampler position, so the final weights equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affbatch.errors import UsageError
from training.data import BatchLoader, CropRows, SequenceSampler, to_model_input
from training.features import build_feature_cache
from training.losses import ccc_loss
from training.models import STRATEGIES, build_model, freeze_for_strategy, trailing_dropout
from training.schedule import LEARNING_RATE, make_optimizer, set_learning_rate
from training.state import STATE_FILE, load_state, save_state
from training.store import CropStore, write_json_atomically
from training.validate import Validation, validate

#: Not from the paper (it trains "in fixed number of epochs" without saying how many).
DEFAULT_EPOCHS = 20
#: Steps between saved training states, and between progress lines.
CHECKPOINT_EVERY = 200
LOG_EVERY = 50
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOG_COLUMNS = ("step", "epoch", "lr", "loss", "val_valence", "val_arousal", "val_mean", "seconds")
#: Options that must not change across --resume (the others, such as --epochs, may).
RESUME_KEYS = (
    "train",
    "val",
    "splits",
    "train_split",
    "val_split",
    "strategy",
    "arch",
    "init_from",
    "backbone",
    "seed",
)

Report = Callable[[str], None]


@dataclass
class FitOptions:
    """Options of ``fit``; defaults defined once, here."""

    train: Path
    out: Path
    val: Path | None = None
    splits: Path | None = None
    train_split: str = "train"
    val_split: str = "validation"
    strategy: str = "i"
    arch: str = "vggface-gru-attn"
    init_from: Path | None = None
    backbone: Path | None = None
    backbone_kind: str = "vggface"
    epochs: int = DEFAULT_EPOCHS
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    feature_cache: bool = True
    learning_rate: float = LEARNING_RATE
    checkpoint_every: int = CHECKPOINT_EVERY
    log_every: int = LOG_EVERY
    resume: bool = False
    deterministic: bool | None = None  # None: on for the CPU, off on CUDA
    stop_after: int | None = None  # stop (as if interrupted) after this many steps of this call

    def __post_init__(self) -> None:
        for name in ("train", "out", "val", "splits", "init_from", "backbone"):
            value = getattr(self, name)
            setattr(self, name, None if value is None else Path(value))
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        for name in ("epochs", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps {self.max_steps}: must be at least 1")


@dataclass
class FitResult:
    out: Path
    best: Path | None
    best_validation: dict | None
    steps: int
    epochs: int
    finished: bool
    curve: list[dict] = field(default_factory=list)  # per epoch: epoch, step, loss, validation


def _precision(options: FitOptions, device: str) -> torch.dtype | None:
    """The autocast dtype: None (fp32) on the CPU; bf16 where the GPU has it, else fp16."""
    if not device.startswith("cuda"):
        if options.precision in ("bf16", "fp16"):
            raise UsageError(f"--precision {options.precision}: mixed precision runs on CUDA only; use fp32 or auto")
        return None
    if options.precision == "fp32":
        return None
    if options.precision == "fp16" or (options.precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def resolve_device_option(device: str) -> str:
    from engines import EngineError
    from engines.build import resolve_device

    try:
        return resolve_device(device)
    except EngineError as exc:
        raise UsageError(f"--device: {exc}") from None


def select_tracks(store: CropStore, split: str, splits: dict[str, str] | None, role: str):
    if splits is not None:
        tracks = [t for t in store.select() if splits.get(t.label or "") == split]
    elif any(t.split for t in store.tracks):
        tracks = store.select(split)
    else:
        tracks = store.select()
    if role == "training" and not tracks:
        raise UsageError(f"{store.folder}: no labelled tracks for training (split {split!r})")
    return tracks


def _check_resume(options: FitOptions, run_file: Path) -> None:
    now = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    if not options.resume:
        if (options.out / STATE_FILE).exists():
            raise UsageError(f"--out {options.out}: holds a training state; pass --resume, or choose another --out")
    elif run_file.exists():
        before = json.loads(run_file.read_text())
        changed = [k for k in RESUME_KEYS if before.get(k) != now.get(k)]
        if changed:
            k = changed[0]
            raise UsageError(
                f"--resume with --{k.replace('_', '-')} {now.get(k)}: the run in {options.out} used {before.get(k)}"
            )
    write_json_atomically(run_file, now)


def fit(options: FitOptions, report: Report = print) -> FitResult:
    """Train as ``options`` say; see the module docstring."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(options, out / "run.json")
    device = resolve_device_option(options.device)
    amp_dtype = _precision(options, device)
    deterministic = options.deterministic if options.deterministic is not None else device == "cpu"
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible GEMMs
        torch.use_deterministic_algorithms(True)
    try:
        return _fit(options, device, amp_dtype, report)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _fit(options: FitOptions, device: str, amp_dtype: torch.dtype | None, report: Report) -> FitResult:
    out = options.out
    train_store = CropStore(options.train)
    val_store = CropStore(options.val) if options.val else train_store
    splits = None
    if options.splits is not None:
        from training.splits import read_split

        splits = read_split(options.splits)
    train_tracks = select_tracks(train_store, options.train_split, splits, "training")
    val_tracks = select_tracks(val_store, options.val_split, splits, "validation")
    if val_store.folder.resolve() == train_store.folder.resolve() and {t.index for t in val_tracks} & {
        t.index for t in train_tracks
    }:
        raise UsageError(
            f"{train_store.folder}: training and validation tracks overlap; give --val STORE, or splits "
            "(prepare --split / --splits FILE)"
        )

    random.seed(options.seed)
    np.random.seed(options.seed)
    torch.manual_seed(options.seed)
    model, provenance = build_model(
        options.arch, options.strategy, options.init_from, options.backbone, options.backbone_kind
    )
    for line in provenance.get("notes", []):
        report(line)
    model.to(device)
    trainable = freeze_for_strategy(model, options.strategy)
    report(
        f"strategy {options.strategy}: {STRATEGIES[options.strategy]}; "
        f"{sum(p.numel() for p in trainable):,} trainable parameters; device {device}"
        + (f", autocast {str(amp_dtype).removeprefix('torch.')}" if amp_dtype else "")
    )

    cache_train = cache_val = None
    if options.strategy == "i" and options.feature_cache:
        cache_train = build_feature_cache(train_store, train_tracks, model.cnn, out / "features", device, report)
        if val_tracks:
            cache_val = build_feature_cache(val_store, val_tracks, model.cnn, out / "features", device, report)
    labels = [train_store.labels(t) for t in train_tracks]
    sampler = SequenceSampler(labels, options.seed)
    per_epoch = sampler.batches_in(0)
    if per_epoch == 0:
        raise UsageError(
            f"{train_store.folder}: not enough labelled data for one batch of {sampler.batch_sequences} "
            f"sequences of {sampler.length} consecutive labelled frames"
        )
    loader = BatchLoader(sampler, train_tracks, labels, cache_train or CropRows(train_store))
    report(
        f"training: {len(train_tracks)} tracks, {sampler.frames} labelled frames in runs of >= {sampler.length}, "
        f"~{per_epoch} batches of {sampler.batch_sequences}x{sampler.length} per epoch; validation: "
        f"{len(val_tracks)} label files, {sum(t.labelled for t in val_tracks)} labelled frames"
    )

    optimizer = make_optimizer(trainable, options.learning_rate)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    progress: dict[str, Any] = {
        "step": 0, "epoch": 0, "position": 0, "best": None, "best_epoch": None, "seconds": 0.0,
        "log_rows": 0, "curve": [], "finished": False, "epoch_loss": [0.0, 0], "window_loss": [0.0, 0],
    }  # fmt: skip
    state_path = out / STATE_FILE
    if options.resume and state_path.exists():
        progress = load_state(state_path, model, optimizer, scaler)
        report(f"resumed at step {progress['step']} (epoch {progress['epoch'] + 1}, batch {progress['position']})")
    log = _Log(out / "log.csv", progress["log_rows"])
    board = _tensorboard(out)

    def save() -> None:
        progress["log_rows"] = log.rows
        save_state(state_path, model, optimizer, progress, scaler)

    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    frozen_cnn = options.strategy == "i"
    # Strategy i freezes the CNN's weights, not its dropout (see training.models.trailing_dropout).
    dropout = trailing_dropout(model.cnn) if frozen_cnn else None
    t_resume, seconds_before = time.perf_counter(), progress["seconds"]
    steps_here, t_window = 0, time.perf_counter()
    # Running sums [total, count] of the epoch's and the progress window's losses: in the state,
    # so that a resumed run logs the same numbers as an uninterrupted one.
    epoch_loss, window = progress["epoch_loss"], progress["window_loss"]

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - t_resume

    def end_of_epoch(partial: bool) -> None:
        """Validate, keep the best, log; at an epoch's end or where --max-steps stops one."""
        validation = validate(model, val_store, val_tracks, device, cache_val, amp_dtype) if val_tracks else None
        o = validation.overall if validation else None
        mean_loss = epoch_loss[0] / epoch_loss[1] if epoch_loss[1] else float("nan")
        point = {"epoch": progress["epoch"] + 1, "step": progress["step"], "loss": mean_loss, "partial": partial}
        if o is not None:
            point.update(valence=o.valence, arousal=o.arousal, mean=o.mean)
        better = o is None or (o.mean is not None and (progress["best"] is None or o.mean > progress["best"]))
        if better:
            progress["best"], progress["best_epoch"] = (o.mean if o else None), progress["epoch"] + 1
            _save_best(model, out / "best", options, progress, validation, provenance)
        progress["curve"].append(point)
        log.write(progress["step"], progress["epoch"] + 1, optimizer.param_groups[0]["lr"], mean_loss, o, elapsed())
        if board is not None and o is not None and o.mean is not None:
            for k in ("valence", "arousal", "mean"):
                board.add_scalar(f"val/ccc_{k}", getattr(o, k), progress["step"])
        report(_epoch_line(point, options.epochs, better and o is not None, elapsed()))

    def more() -> bool:  # --epochs and --max-steps may both grow on --resume
        return progress["epoch"] < options.epochs and (
            options.max_steps is None or progress["step"] < options.max_steps
        )

    while more():
        epoch = progress["epoch"]
        in_epoch = sampler.batches_in(epoch)
        model.train()
        if frozen_cnn:
            model.cnn.eval()
        stopped = False
        for batch in loader.epoch(epoch, progress["position"]):
            lr = set_learning_rate(optimizer, progress["step"], initial=options.learning_rate)
            x = to_model_input(batch.inputs.to(device, non_blocking=True))
            y = batch.labels.to(device, non_blocking=True)
            with autocast():
                if frozen_cnn:
                    f = x
                    if cache_train is None:
                        with torch.no_grad():
                            f = model.cnn(x.reshape(-1, *x.shape[2:])).reshape(x.shape[0], x.shape[1], -1)
                    pred, _ = model.temporal(dropout(f) if dropout is not None else f)
                else:
                    pred, _ = model(x)
            loss, ccc_v, ccc_a = ccc_loss(pred.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())
            progress["step"] += 1
            progress["position"] += 1
            steps_here += 1
            epoch_loss[0] += value
            epoch_loss[1] += 1
            window[0] += value
            window[1] += 1
            if board is not None:
                board.add_scalar("train/loss", value, progress["step"])
            if progress["step"] % options.log_every == 0:
                rate = window[1] / max(time.perf_counter() - t_window, 1e-9)
                report(
                    f"step {progress['step']} (epoch {epoch + 1}, batch {progress['position']}/{in_epoch}): "
                    f"loss {window[0] / window[1]:.4f}, lr {lr:.3g}, {rate:.1f} steps/s"
                )
                log.write(progress["step"], epoch + 1, lr, window[0] / window[1], None, elapsed())
                window[:] = [0.0, 0]
                t_window = time.perf_counter()
            if options.max_steps is not None and progress["step"] >= options.max_steps:
                complete = progress["position"] >= in_epoch
                end_of_epoch(partial=not complete)
                if complete:
                    progress["epoch"] += 1
                    progress["position"] = 0
                    epoch_loss[:] = [0.0, 0]
                stopped = True
                break
            if progress["step"] % options.checkpoint_every == 0:
                progress["seconds"] = elapsed()
                save()
            if options.stop_after is not None and steps_here >= options.stop_after:
                progress["seconds"] = elapsed()
                save()
                report(f"stopped after {steps_here} steps (step {progress['step']}); --resume continues")
                return _result(options, progress, finished=False)
        if not stopped:
            end_of_epoch(partial=False)
            progress["epoch"] += 1
            progress["position"] = 0
            epoch_loss[:] = [0.0, 0]
        progress["seconds"] = elapsed()
        save()
    progress["finished"] = True
    progress["seconds"] = elapsed()
    save()
    if board is not None:
        board.close()
    return _result(options, progress, finished=True)


def _result(options: FitOptions, progress: dict, finished: bool) -> FitResult:
    best = options.out / "best"
    validation = None
    if progress.get("best_epoch") is not None and best.is_dir():
        config = json.loads((best / "config.json").read_text())
        validation = config.get("training", {}).get("validation")
    return FitResult(
        out=options.out,
        best=best if best.is_dir() else None,
        best_validation=validation,
        steps=progress["step"],
        epochs=progress["epoch"],
        finished=finished,
        curve=list(progress["curve"]),
    )


def _save_best(model, folder: Path, options: FitOptions, progress: dict, validation: Validation | None, provenance):
    from affbatch.models.checkpoint import save_checkpoint

    training = {
        "strategy": options.strategy,
        "epoch": progress["epoch"] + 1,
        "step": progress["step"],
        "selected_by": "validation mean CCC (official protocol)" if validation else "last epoch (no validation data)",
        "validation": validation.overall.to_json() if validation else None,
        "train_store": str(options.train),
        "val_store": str(options.val or options.train),
        "seed": options.seed,
        **{k: v for k, v in provenance.items() if k != "notes"},
    }
    save_checkpoint(model, folder, trained=True, extra={"training": training})


def _epoch_line(point: dict, epochs: int, best: bool, seconds: float) -> str:
    head = f"epoch {point['epoch']}/{epochs}" + (" (stopped by --max-steps)" if point["partial"] else "")
    line = f"{head}: step {point['step']}, train loss {point['loss']:.4f}"
    if "mean" in point:

        def f(x):
            return "  -  " if x is None else f"{x:.3f}"

        line += f" | validation CCC valence {f(point['valence'])} arousal {f(point['arousal'])} mean {f(point['mean'])}"
        line += " (best)" if best else ""
    return line + f" | {seconds:.0f} s"


class _Log:
    """``log.csv``: one row per progress line (loss) and per epoch (loss and validation CCCs).

    A resumed run first cuts the file back to the rows its state had seen, so replayed steps
    are not logged twice.
    """

    def __init__(self, path: Path, keep_rows: int):
        self.path = path
        rows = []
        if keep_rows and path.exists():
            with open(path, newline="") as f:
                rows = list(csv.reader(f))[1 : keep_rows + 1]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LOG_COLUMNS)
            w.writerows(rows)
        self.rows = len(rows)

    def write(self, step: int, epoch: int, lr: float, loss: float, val, seconds: float) -> None:
        def g(x):
            return "" if x is None else f"{x:.6g}"

        row = [step, epoch, f"{lr:.6g}", g(loss), g(val and val.valence), g(val and val.arousal), g(val and val.mean)]
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([*row, f"{seconds:.1f}"])
        self.rows += 1


def _tensorboard(out: Path):
    """A SummaryWriter when tensorboard is installed (it is not a dependency), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
