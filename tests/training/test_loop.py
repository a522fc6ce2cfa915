"""Training: loss, schedule, sampler, validation protocol, strategies, checkpoints, exact resume.

A tiny stand-in model with the VGGFaceGRUAttention interface (``cnn`` + ``temporal``, with a
dropout so that resuming must restore the RNG) keeps every fit to a fraction of a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from affbatch.models import checkpoint as ck
from affbatch.models.vggface_gru_attn import GRUAttention

# The oracle: a float64 transcription of the paper's eq. (1), independent of the code under test
# (affbatch.evaluation.metrics and training.losses).
from tests.evaluation.test_metrics import ccc_reference as reference_ccc
from training.data import BatchLoader, CropRows, SequenceSampler, labelled_runs, to_model_input
from training.loop import FitOptions, fit
from training.losses import ccc, ccc_loss
from training.schedule import DECAY_RATE, DECAY_STEPS, LEARNING_RATE, learning_rate
from training.state import STATE_FILE, read_progress
from training.store import CropStore, StoreWriter
from training.validate import score_predictions

ROOT = Path(__file__).resolve().parents[2]


# -- a tiny model and data set ---------------------------------------------------------------


class TinyCNN(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=8, stride=8)  # 96 -> 12
        self.pool = nn.AvgPool2d(4)  # 12 -> 3
        self.fc = nn.Linear(36, width)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(torch.relu(self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))))


class Tiny(nn.Module):
    architecture = "tiny-test"

    def __init__(self):
        super().__init__()
        self.cnn = TinyCNN()
        self.temporal = GRUAttention(16, units=8, layers=2, attention_length=4)

    def forward(self, x, state=None):
        f = self.cnn(x.reshape(-1, *x.shape[2:])).reshape(x.shape[0], x.shape[1], -1)
        return self.temporal(f, state)


def register_tiny() -> None:
    """Make "tiny-test" a checkpoint architecture (as the zoo's models are)."""
    ck.ARCHITECTURES["tiny-test"] = Tiny
    ck._DESCRIBE["tiny-test"] = lambda m: {"input_size": [96, 96, 3], "normalisation": "[-1,1]"}
    ck._BUILD["tiny-test"] = lambda config: Tiny()


@pytest.fixture
def tiny_arch():
    register_tiny()
    yield "tiny-test"
    for table in (ck.ARCHITECTURES, ck._DESCRIBE, ck._BUILD):
        table.pop("tiny-test", None)


def write_tiny_store(folder: Path, tracks: int = 6, frames: int = 240, seed: int = 0) -> Path:
    """Faces whose brightness is the valence and whose red-blue balance is the arousal."""
    rng = np.random.default_rng(seed)
    with StoreWriter(folder, {"source": "test"}, overwrite=True) as w:
        for i in range(tracks):
            t = np.arange(frames) / 30
            va = np.stack([np.sin(t / rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(2)], 1) * 0.8
            crops = np.empty((frames, 96, 96, 3), np.uint8)
            crops[..., 1] = (128 + 100 * va[:, :1, None]).astype(np.uint8)
            crops[..., 0] = (128 + 100 * va[:, 1:, None]).astype(np.uint8)
            crops[..., 2] = (128 - 100 * va[:, 1:, None]).astype(np.uint8)
            crops = np.clip(crops.astype(int) + rng.integers(-20, 20, crops.shape), 0, 255).astype(np.uint8)
            split = "validation" if i == tracks - 1 else "train"
            f = np.arange(frames)
            labels = va.astype(np.float32)
            labels[100:103] = np.nan  # a gap: windows never cross it
            w.add_track(
                {"video": f"v{i}", "track": 0, "label": f"v{i}", "split": split, "valid_labels": frames},
                {"frame": f, "source_frame": f, "crop": crops, "valence": labels[:, 0], "arousal": labels[:, 1]},
            )
    return folder


def tiny_fit(store: Path, out: Path, report=lambda _: None, **kw):
    options = dict(train=store, out=out, arch="tiny-test", epochs=100, seed=3, device="cpu", log_every=1000)
    options.update(kw)
    return fit(FitOptions(**options), report=report)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / STATE_FILE))


# -- loss and schedule -----------------------------------------------------------------------


def test_ccc_matches_the_metric_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 80, 2, generator=g), torch.randn(4, 80, 2, generator=g)
    y = 0.6 * x + 0.4 * y + 0.3
    x.requires_grad_(True)
    loss, cv, ca = ccc_loss(x, y)
    for d, value in enumerate((cv, ca)):
        expected = reference_ccc(x[..., d].detach().numpy().ravel(), y[..., d].numpy().ravel())
        assert float(value.detach()) == pytest.approx(expected, abs=1e-5)
    assert float(loss.detach()) == pytest.approx(1 - (float(cv.detach()) + float(ca.detach())) / 2)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Perfect predictions: loss 0. Constant ones: CCC 0, not NaN.
    assert float(ccc_loss(y, y)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(ccc(torch.zeros(10), torch.zeros(10))) == 0.0
    # Per sequence is a different number (the batch's is the default, see losses.py).
    per_sequence = ccc_loss(x.detach(), y, reduction="sequence")[0]
    assert abs(float(per_sequence) - float(loss.detach())) > 1e-4


def test_learning_rate_staircase():
    assert learning_rate(0) == LEARNING_RATE == 1e-3
    assert learning_rate(DECAY_STEPS - 1) == 1e-3
    assert learning_rate(DECAY_STEPS) == pytest.approx(1e-3 * DECAY_RATE)
    assert learning_rate(2 * DECAY_STEPS + 5) == pytest.approx(1e-3 * 0.97**2)
    assert learning_rate(200, staircase=False) == pytest.approx(1e-3 * 0.97**0.5)


# -- sampling --------------------------------------------------------------------------------


def test_sampler_windows_are_labelled_deterministic_and_resumable():
    labels = [np.zeros((300, 2)), np.zeros((90, 2)), np.zeros((50, 2))]
    labels[0][150] = np.nan  # splits track 0 into runs of 150 and 149
    assert labelled_runs(labels[0]) == [(0, 150), (151, 300)]
    sampler = SequenceSampler(labels, seed=5)
    for epoch in range(5):
        w = sampler.windows(epoch)
        assert len(w) >= 3
        for track, start in w:
            assert np.isfinite(labels[track][start : start + 80]).all() and start + 80 <= len(labels[track])
        assert 2 not in w[:, 0]  # too short for a window
    assert np.array_equal(SequenceSampler(labels, seed=5).windows(3), sampler.windows(3))
    assert not np.array_equal(sampler.windows(0), sampler.windows(1))
    everything = list(sampler.batches(2))
    assert all(b.shape == (4, 2) for b in everything)
    assert all(np.array_equal(a, b) for a, b in zip(list(sampler.batches(2, start=1)), everything[1:], strict=True))


def test_batches_hold_the_windows_rows(tmp_path):
    store = CropStore(write_tiny_store(tmp_path / "s", tracks=3, frames=200))
    tracks = store.select()
    labels = [store.labels(t) for t in tracks]
    loader = BatchLoader(SequenceSampler(labels, seed=0), tracks, labels, CropRows(store))
    batch = next(iter(loader.epoch(0)))
    assert batch.inputs.shape == (4, 80, 96, 96, 3) and batch.inputs.dtype == torch.uint8
    track, start = batch.windows[0]
    assert np.array_equal(batch.inputs[0].numpy(), store.crops(tracks[track], start, start + 80))
    assert np.array_equal(batch.labels[0].numpy(), labels[track][start : start + 80])
    x = to_model_input(batch.inputs)
    assert x.shape == (4, 80, 3, 96, 96) and x.min() >= -1 and x.max() <= 1
    assert float(x[0, 0, 1, 0, 0]) == pytest.approx(int(batch.inputs[0, 0, 0, 0, 1]) / 127.5 - 1)


# -- validation protocol ---------------------------------------------------------------------


def test_validation_protocol_counts_each_source_frame_once(tmp_path):
    """30 fps repeats a source frame: its predictions are averaged, its label counted once."""
    source = np.array([0, 0, 1, 2, 2, 3, 4])
    lab = np.array([0.1, 0.1, 0.5, -0.2, -0.2, np.nan, 0.9], np.float32)
    with StoreWriter(tmp_path / "s", {}) as w:
        w.add_track(
            {"video": "v", "track": 0, "label": "v", "valid_labels": 5, "missing": 1},
            {"frame": np.arange(7), "source_frame": source, "crop": np.zeros((7, 96, 96, 3), np.uint8),
             "valence": lab, "arousal": -lab},
        )  # fmt: skip
    store = CropStore(tmp_path / "s")
    pred = np.array([[0.0, 0.0], [0.4, 0.0], [0.3, -0.3], [-0.1, 0.2], [0.1, 0.0], [5.0, 5.0], [0.8, -0.7]])
    result = score_predictions(store, store.tracks, {0: pred})
    want_v = reference_ccc([0.1, 0.5, -0.2, 0.9], [0.2, 0.3, 0.0, 0.8])
    want_a = reference_ccc([-0.1, -0.5, 0.2, -0.9], [0.0, -0.3, 0.1, -0.7])
    o = result.overall
    assert (o.frames, o.missing) == (4, 1)
    assert o.valence == pytest.approx(want_v) and o.arousal == pytest.approx(want_a)


# -- fitting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["i", "ii"])
def test_resume_gives_the_same_weights(tmp_path, tiny_arch, strategy):
    store = write_tiny_store(tmp_path / "s")
    steps = 11  # several epochs (2 batches each), checkpoints and validations on the way
    kw = dict(strategy=strategy, max_steps=steps, checkpoint_every=3)
    whole = tiny_fit(store, tmp_path / "whole", **kw)
    assert whole.finished and whole.steps == steps and whole.epochs >= 2
    part = tiny_fit(store, tmp_path / "parts", stop_after=5, **kw)
    assert not part.finished and part.steps == 5
    with pytest.raises(Exception, match="--resume"):
        tiny_fit(store, tmp_path / "parts", **kw)
    resumed = tiny_fit(store, tmp_path / "parts", resume=True, **kw)
    assert resumed.steps == steps and resumed.curve == whole.curve
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "parts")
    model_keys = [k for k in a if k.startswith(("model.", "optim."))]
    assert model_keys and all(torch.equal(a[k], b[k]) for k in model_keys)
    # The log too: same rows (the seconds column aside).
    rows_a = [r.split(",")[:-1] for r in (tmp_path / "whole" / "log.csv").read_text().splitlines()]
    rows_b = [r.split(",")[:-1] for r in (tmp_path / "parts" / "log.csv").read_text().splitlines()]
    assert rows_a == rows_b
    if strategy == "i":  # the frozen CNN did not move
        torch.manual_seed(3)
        start = Tiny()
        assert all(torch.equal(a[f"model.cnn.{k}"], v) for k, v in start.cnn.state_dict().items())


def test_best_checkpoint_loads_and_learning_happens(tmp_path, tiny_arch):
    store = write_tiny_store(tmp_path / "s")
    lines = []
    result = tiny_fit(store, tmp_path / "run", strategy="ii", epochs=25, report=lines.append)
    curve = [p["mean"] for p in result.curve]
    assert result.best_validation["mean"] == max(curve) > 0.5, curve  # the drawn colours carry the labels
    model, checkpoint = ck.load_checkpoint(tmp_path / "run" / "best")
    assert checkpoint.trained and checkpoint.config["training"]["strategy"] == "ii"
    assert checkpoint.config["training"]["validation"]["mean"] == result.best_validation["mean"]
    assert any(line.startswith("epoch 25/25") for line in lines)
    header = (tmp_path / "run" / "log.csv").read_text().splitlines()[0]
    assert header == "step,epoch,lr,loss,val_valence,val_arousal,val_mean,seconds"


def test_strategy_iii_needs_a_checkpoint_and_starts_from_it(tmp_path, tiny_arch):
    store = write_tiny_store(tmp_path / "s", tracks=3)
    with pytest.raises(Exception, match="--init-from"):
        tiny_fit(store, tmp_path / "x", strategy="iii")
    torch.manual_seed(7)
    start = ck.save_checkpoint(Tiny(), tmp_path / "init", trained=True)
    result = tiny_fit(store, tmp_path / "iii", strategy="iii", init_from=start.path, max_steps=1)
    model, c = ck.load_checkpoint(result.best)
    assert c.config["training"]["init_from"]["sha256"] == start.sha256
    before, _ = ck.load_checkpoint(start.path)
    assert not torch.equal(model.cnn.fc.weight, before.cnn.fc.weight)  # all layers trained


def test_resume_after_sigkill(tmp_path, tiny_arch):
    """A run killed (SIGKILL) between saved states and resumed ends with the uninterrupted weights."""
    store = write_tiny_store(tmp_path / "s")
    kw = dict(strategy="ii", max_steps=14, checkpoint_every=2)
    tiny_fit(store, tmp_path / "whole", **kw)
    script = (
        "import sys, time, torch; sys.path.insert(0, sys.argv[1]); torch.set_num_threads(int(sys.argv[4]))\n"
        "from tests.training.test_loop import register_tiny, tiny_fit\n"
        "register_tiny()\n"
        "slow = lambda line: time.sleep(0.25)\n"
        "tiny_fit(sys.argv[2], sys.argv[3], strategy='ii', max_steps=14,\n"
        "         checkpoint_every=2, log_every=1, report=slow)\n"
    )
    run = tmp_path / "killed"
    args = [sys.executable, "-c", script, str(ROOT), str(store), str(run), str(torch.get_num_threads())]
    child = subprocess.Popen(args, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (run / STATE_FILE).exists() and read_progress(run / STATE_FILE)["step"] >= 5:
                break
            assert child.poll() is None, "the child finished before it could be killed"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    killed_at = read_progress(run / STATE_FILE)["step"]
    assert 5 <= killed_at < 14
    tiny_fit(store, run, resume=True, **kw)
    a, b = weights(tmp_path / "whole"), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "optim.")))


def test_export_before_the_first_validation_converts_the_state(tmp_path, tiny_arch):
    from training.export import export_checkpoint

    store = write_tiny_store(tmp_path / "s")
    result = tiny_fit(store, tmp_path / "run", strategy="ii", stop_after=1)
    assert result.best is None
    exported = export_checkpoint(tmp_path / "run", tmp_path / "model")
    assert exported.trained and exported.config["training"]["selected_by"] == "last training state"
    state = weights(tmp_path / "run")
    model, _ = ck.load_checkpoint(tmp_path / "model")
    assert all(torch.equal(v, state[f"model.{k}"]) for k, v in model.state_dict().items())
