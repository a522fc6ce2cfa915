"""VGGFACE1-GRU-attention: shapes, causality, the attention window, predict_track's windows, checkpoints.

VGG-16 at 96x96 costs 5.7 GFLOPs a frame, so the tests that need the CNN use a handful of frames;
the recurrent part is tested on random fc6-sized features.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from affbatch.models import checkpoint as ckpt
from affbatch.models import vggface_gru_attn as vga
from affbatch.models.vggface_gru_attn import (
    ATTENTION_LENGTH,
    CROP_SIZE,
    FC6_UNITS,
    GRU_UNITS,
    SEQUENCE_LENGTH,
    predict_track,
    track_windows,
)


def frames(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, 3, CROP_SIZE, CROP_SIZE, generator=g) * 2 - 1


def features(batch: int, steps: int, seed: int = 2) -> torch.Tensor:
    """fc6-like inputs: non-negative (after ReLU), unit scale."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, FC6_UNITS, generator=g).clamp(min=0)


def test_architecture_follows_the_paper(vggface_model):
    convs = [m for m in vggface_model.cnn.features if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in vggface_model.cnn.features if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) for c in convs) and len(pools) == 5
    assert vggface_model.cnn.fc6.in_features == 512 * 3 * 3 and vggface_model.cnn.fc6.out_features == FC6_UNITS
    gru = vggface_model.temporal.gru
    assert (gru.num_layers, gru.hidden_size, gru.batch_first) == (2, GRU_UNITS, True)
    assert vggface_model.temporal.attention_length == ATTENTION_LENGTH == 32 and SEQUENCE_LENGTH == 80


def test_forward_shapes_range_and_input_dependence(vggface_model):
    x = frames(2, 3)
    pre = []
    hook = vggface_model.temporal.out.register_forward_hook(lambda module, args, out: pre.append(out))
    with torch.no_grad():
        y, state = vggface_model(x)
    hook.remove()
    assert y.shape == (2, 3, 2)
    # The outputs are tanh of the head's linear layer (seen through a hook, not recomputed),
    # in (-1, 1) and not saturated: random weights give moderate values that differ.
    torch.testing.assert_close(y, torch.tanh(pre[0]), rtol=0, atol=0)
    assert y.abs().max() < 0.99 and y.std() > 1e-3
    assert state.hidden.shape == (2, 2, GRU_UNITS)
    assert state.memory.shape == (2, ATTENTION_LENGTH - 1, GRU_UNITS)
    assert state.memory_mask.dtype == torch.bool and state.memory_mask.sum(dim=1).tolist() == [3, 3]
    # Random weights must still see the input, or parity and causality tests could not fail.
    assert (y[0] - y[1]).abs().min() > 1e-3


def test_dropout_only_in_training(vggface_model):
    x = frames(1, 1)
    f = vggface_model.cnn
    with torch.no_grad():
        assert torch.equal(f(x[0]), f(x[0]))
        f.train()
        try:
            assert not torch.equal(f(x[0]), f(x[0]))
        finally:
            f.eval()


def test_attention_is_causal(vggface_model):
    x = frames(1, 4)
    changed = x.clone()
    changed[0, 2] = frames(1, 1, seed=9)[0, 0]
    with torch.no_grad():
        y, _ = vggface_model(x)
        y2, _ = vggface_model(changed)
    assert torch.equal(y[0, :2], y2[0, :2])
    assert (y[0, 2:] - y2[0, 2:]).abs().min() > 1e-4


def test_attention_is_causal_across_the_window(vggface_model):
    f = features(1, 45)
    t = 40
    changed = f.clone()
    changed[0, t + 1 :] = features(1, 45 - t - 1, seed=5)
    with torch.no_grad():
        y, _ = vggface_model.temporal(f)
        y2, _ = vggface_model.temporal(changed)
    assert torch.equal(y[0, : t + 1], y2[0, : t + 1]) and not torch.equal(y[0, t + 1 :], y2[0, t + 1 :])


def naive_attention(temporal: vga.GRUAttention, f: torch.Tensor) -> torch.Tensor:
    """A step-by-step loop: scores over h[max(0, t-31) .. t], Bahdanau, softmax, Linear([h_t; c_t])."""
    h, _ = temporal.gru(f)
    out = []
    for t in range(h.shape[1]):
        window = h[:, max(0, t - ATTENTION_LENGTH + 1) : t + 1]
        scores = torch.tanh(temporal.attn_key(window) + temporal.attn_query(h[:, t : t + 1])) @ temporal.attn_v
        context = (torch.softmax(scores, dim=1)[..., None] * window).sum(dim=1)
        out.append(torch.tanh(temporal.out(torch.cat([h[:, t], context], dim=-1))))
    return torch.stack(out, dim=1)


def test_windowed_attention_matches_a_step_loop(vggface_model):
    f = features(2, 40)
    with torch.no_grad():
        y, _ = vggface_model.temporal(f)
        reference = naive_attention(vggface_model.temporal, f)
    torch.testing.assert_close(y, reference, rtol=0, atol=1e-6)


def continued(temporal, f: torch.Tensor, split: int):
    """The whole sequence in one call, and in two calls with the state carried between them."""
    with torch.no_grad():
        y, state = temporal(f)
        y1, s1 = temporal(f[:, :split])
        y2, s2 = temporal(f[:, split:], s1)
    return (y, state), (torch.cat([y1, y2], dim=1), s2)


@pytest.mark.parametrize("split", [1, 5, 31, 33])
def test_state_continues_a_sequence_exactly(vggface_model, split):
    """Carrying the state is exact: in float64 the split run equals the whole one to rounding
    of float64. In float32 the two runs may round differently (the input projection of a
    sequence is one GEMM whose blocking depends on its length, and so on the split), so they
    agree within the rounding error of that projection: a 4096-long float32 dot product
    differs between summation orders by about sqrt(K) * u * sum|x_i w_i| (Higham's
    probabilistic bound, u = 2**-24), which the GRU's gates only shrink. (Seen: up to 2.1e-6
    between torch builds and CPUs; a state that is not carried differs by ~1e-1.)"""
    f = features(2, 40)
    temporal64 = copy.deepcopy(vggface_model.temporal).double()
    (y, state), (y_split, s_split) = continued(temporal64, f.double(), split)
    torch.testing.assert_close(y_split, y, rtol=0, atol=1e-12)
    for a, b in zip(s_split, state, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)

    weights = vggface_model.temporal.gru.weight_ih_l0
    u = torch.finfo(torch.float32).eps / 2
    atol = FC6_UNITS**0.5 * u * (f.abs() @ weights.detach().abs().T).max().item()
    (y, state), (y_split, s_split) = continued(vggface_model.temporal, f, split)
    torch.testing.assert_close(y_split, y, rtol=0, atol=atol)
    for a, b in zip(s_split, state, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def test_track_windows_partition_the_track():
    for n in (0, 1, 79, 80, 81, 128, 129, 500):
        spans = track_windows(n)
        emitted = [i for _, stop, emit in spans for i in range(emit, stop)]
        assert emitted == list(range(n))
        assert all(stop - start <= SEQUENCE_LENGTH for start, stop, _ in spans)
        assert all(emit - start in (0, ATTENTION_LENGTH) for start, _, emit in spans)
    assert track_windows(200) == [(0, 80, 0), (48, 128, 80), (96, 176, 128), (144, 200, 176)]
    with pytest.raises(ValueError, match="warmup"):
        track_windows(10, window=8, warmup=8)


def documented_start(t: int, window: int, warmup: int) -> int:
    """predict_track's docstring: frame t is predicted from frames[s:t+1], a zero state at s."""
    stride = window - warmup
    return 0 if t < window else stride * ((t - warmup) // stride)


def test_predict_track_is_the_documented_windowed_run(vggface_model):
    n = 200
    f = features(1, n)[0].numpy()
    calls = []

    def temporal(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[1])
        with torch.no_grad():
            return vggface_model.temporal(torch.from_numpy(x))[0].numpy()

    got = predict_track(f, features=lambda x: x, temporal=temporal, batch_size=7)
    assert calls == [80, 80, 80, 56]
    for t in (0, 31, 79, 80, 100, 127, 128, 150, 175, 176, 199):
        s = documented_start(t, SEQUENCE_LENGTH, ATTENTION_LENGTH)
        assert t - s >= ATTENTION_LENGTH or s == 0
        with torch.no_grad():
            expected = vggface_model.temporal(torch.from_numpy(f[None, s : t + 1]))[0][0, -1].numpy()
        np.testing.assert_allclose(got[t], expected, rtol=0, atol=1e-6)
    # ...and not the state carried from frame 0, which is what it chose not to do.
    with torch.no_grad():
        carried = vggface_model.temporal(torch.from_numpy(f[None]))[0][0].numpy()
    np.testing.assert_allclose(got[:80], carried[:80], rtol=0, atol=1e-6)
    assert np.abs(got[150:] - carried[150:]).max() > 1e-4


def test_predict_track_method_computes_each_frame_once(vggface_model):
    x = frames(13)
    calls = []
    cnn = vggface_model.cnn.forward

    def counting(batch):
        calls.append(len(batch))
        return cnn(batch)

    vggface_model.cnn.forward = counting
    try:
        got = vggface_model.predict_track(x.numpy(), window=6, warmup=2, batch_size=4)
    finally:
        del vggface_model.cnn.forward
    assert sum(calls) == 13 and max(calls) <= 4
    with torch.no_grad():
        f = vggface_model.cnn(x)
        for t in range(13):
            s = documented_start(t, 6, 2)
            expected = vggface_model.temporal(f[None, s : t + 1])[0][0, -1]
            np.testing.assert_allclose(got[t], expected.numpy(), rtol=0, atol=1e-5)


def test_fc6_from_224_is_the_full_fc6_on_upsampled_features():
    g = torch.Generator().manual_seed(3)
    w224 = torch.randn(16, 512 * 7 * 7, generator=g)
    pool5 = torch.randn(4, 512, 3, 3, generator=g)
    upsampled = torch.nn.functional.interpolate(pool5, size=(7, 7), mode="nearest")
    torch.testing.assert_close(
        pool5.flatten(1) @ vga.fc6_weight_from_224(w224).T, upsampled.flatten(1) @ w224.T, rtol=1e-5, atol=1e-3
    )


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_round_trip(vggface_model, tmp_path):
    saved = ckpt.save_checkpoint(vggface_model, tmp_path / "ck", trained=False, extra={"seed": 0})
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["architecture"] == "vggface-gru-attn" and config["weights"] == "untrained-init"
    assert config["input_size"] == [96, 96, 3] and config["normalisation"] == "[-1,1]" and config["fps"] == 30
    assert config["rnn"] == {"type": "gru", "layers": 2, "units": 128} and config["backbone"]["feature"] == "fc6"
    assert (config["attention_length"], config["sequence_length"], config["seed"]) == (32, 80, 0)
    assert config["affbatch_version"] and config["weights_sha256"] == saved.sha256

    loaded, info = ckpt.load_checkpoint(tmp_path / "ck")
    assert info.sha256 == saved.sha256 and not info.trained and info.architecture == "vggface-gru-attn"
    x = frames(1, 2)
    with torch.no_grad():
        assert torch.equal(vggface_model(x)[0], loaded(x)[0])
    same, _ = ckpt.resolve_affect_model(str(tmp_path / "ck" / "model.safetensors"))
    assert torch.equal(same.temporal.out.weight, vggface_model.temporal.out.weight)


def test_changed_weights_are_refused(vggface_model, tmp_path):
    ckpt.save_checkpoint(vggface_model, tmp_path, trained=True)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="sha256"):
        ckpt.load_checkpoint(tmp_path)


def test_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.resolve_affect_model("vggface-gru-attn")
    assert "affbatch-train fit" in str(e.value) and "checkpoint folder" in str(e.value)
    assert "model.safetensors" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ckpt.CheckpointError, match="neither a model name"):
        ckpt.resolve_affect_model("no-such-model")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="config.json is missing"):
        ckpt.load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["model.pt", "weights.pth"])
def test_pickles_are_refused(tmp_path, name):
    path = tmp_path / name
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(ckpt.CheckpointError, match="pickle checkpoints .* not loaded"):
        ckpt.resolve_affect_model(str(path))
