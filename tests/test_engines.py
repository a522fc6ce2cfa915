"""engines: ONNX Runtime vs torch parity on the paper's model, the exported graph, the cache, isolation.

The full model (VGG-16 at 96x96, 5.7 GFLOPs a frame) is exported once per module; the cache's
behaviour is tested on a small module with the same kind of layers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import engines
from affbatch.models.vggface_gru_attn import AffectState, VGGFaceGRUAttention
from engines import cache as engine_cache
from engines.onnx_export import onnx_ops

ROOT = Path(__file__).resolve().parents[1]
STATE_NAMES = ["hidden", "memory", "memory_mask"]
MODEL_AXES = {
    "frames": {0: "batch", 1: "time"},
    "va": {0: "batch", 1: "time"},
    "hidden": {1: "batch"},
    "memory": {0: "batch"},
    "memory_mask": {0: "batch"},
}


def crops(batch: int, steps: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, steps, 3, 96, 96, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def model() -> VGGFaceGRUAttention:
    torch.manual_seed(0)
    return VGGFaceGRUAttention().eval()


@pytest.fixture(scope="module")
def ort_model(model, tmp_path_factory) -> engines.Engine:
    return engines.compile(
        model, (crops(1, 2),), ["frames"], ["va", *STATE_NAMES], MODEL_AXES, runtime="onnxruntime",
        cache_dir=tmp_path_factory.mktemp("onnx"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(model):
    """torch's outputs on the largest case; smaller cases are its [:B, :T] (the model is causal
    and sequences in a batch are independent), which spares the CPU a second VGG pass."""
    x = crops(3, 33)
    with torch.no_grad():
        y, state = model(x)
    return x, y.numpy(), state


@pytest.mark.parametrize("steps", [1, 7, 33])
@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(ort_model, reference, batch, steps):
    x, y, _ = reference
    va, hidden, memory, mask = ort_model(x[:batch, :steps].numpy())
    assert va.shape == (batch, steps, 2) and hidden.shape == (2, batch, 128)
    np.testing.assert_allclose(va, y[:batch, :steps], rtol=0, atol=1e-4)
    assert mask.dtype == np.bool_ and (mask.sum(axis=1) == min(steps, 31)).all()
    if steps == 33:  # the full case: the returned state too
        _, _, state = reference
        np.testing.assert_allclose(hidden, state.hidden[:, :batch].numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(memory, state.memory[:batch].numpy(), rtol=0, atol=1e-4)


def test_exported_graph_has_gru_ops_and_no_loops(ort_model):
    ops = onnx_ops(ort_model.onnx_path)
    assert ops["GRU"] == 2 and ops["Conv"] == 13
    assert not {"Loop", "Scan", "If"} & set(ops)


def test_onnxruntime_session_settings(ort_model):
    import onnxruntime as ort

    options = ort_model.session.get_session_options()
    assert options.intra_op_num_threads == os.cpu_count()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert ort_model.session.get_providers() == ["CPUExecutionProvider"]
    assert ort_model.runtime == "onnxruntime" and ort_model.device == "cpu"


def test_torch_runtime_is_the_module_under_inference_mode(model, reference):
    x, y, _ = reference
    engine = engines.compile(model, (x[:1, :2],), ["frames"], ["va", *STATE_NAMES], MODEL_AXES, runtime="torch")
    assert engine.runtime == "torch"
    va, hidden, memory, mask = engine(x[:1, :2].numpy())
    np.testing.assert_allclose(va, y[:1, :2], rtol=0, atol=1e-5)
    assert hidden.shape == (2, 1, 128) and mask.dtype == np.bool_


class StatefulTemporal(torch.nn.Module):
    """The recurrent part with its state as flat inputs, as a streaming caller would export it."""

    def __init__(self, temporal):
        super().__init__()
        self.temporal = temporal

    def forward(self, features, hidden, memory, memory_mask):
        return self.temporal(features, AffectState(hidden, memory, memory_mask))


def test_state_inputs_export_and_continue_a_sequence(model, tmp_path):
    g = torch.Generator().manual_seed(4)
    f = torch.randn(2, 40, 4096, generator=g).clamp(min=0)
    with torch.no_grad():
        y_full, _ = model.temporal(f)
        y_head, state = model.temporal(f[:, :9])
    wrapper = StatefulTemporal(model.temporal)
    axes = {"features": {0: "batch", 1: "time"}, "y": {0: "batch", 1: "time"}}
    axes |= {f"{n}_in": {1 if n == "hidden" else 0: "batch"} for n in STATE_NAMES}
    engine = engines.compile(
        wrapper, (f[:, 9:], *state), ["features", *(f"{n}_in" for n in STATE_NAMES)], ["y", *STATE_NAMES], axes,
        runtime="onnxruntime", cache_dir=tmp_path,
    )  # fmt: skip
    y_tail = engine(f[:, 9:].numpy(), *(s.numpy() for s in state))[0]
    np.testing.assert_allclose(np.concatenate([y_head.numpy(), y_tail], axis=1), y_full.numpy(), rtol=0, atol=1e-5)
    assert onnx_ops(engine.onnx_path)["GRU"] == 2


# --- the cache, on a small module ------------------------------------------------------------


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 8)
        self.gru = torch.nn.GRU(8, 5, num_layers=2, batch_first=True)

    def forward(self, x):
        return self.gru(torch.relu(self.proj(x)))[0]


SMALL_AXES = {"x": {0: "batch", 1: "time"}, "y": {0: "batch", 1: "time"}}


def small() -> Small:
    torch.manual_seed(0)
    return Small().eval()


def compile_small(module, cache_dir, runtime="onnxruntime"):
    x = torch.zeros(1, 3, 6)
    return engines.compile(module, (x,), ["x"], ["y"], SMALL_AXES, runtime=runtime, cache_dir=cache_dir)


@pytest.fixture
def exports(monkeypatch):
    """Counts the ONNX exports the cache performs."""
    calls = []
    real = engine_cache.export_onnx

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_cache, "export_onnx", counting)
    return calls


def test_plain_two_layer_gru_is_two_gru_ops(tmp_path):
    engine = compile_small(small(), tmp_path)
    ops = onnx_ops(engine.onnx_path)
    assert ops["GRU"] == 2 and "Loop" not in ops and "Scan" not in ops


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_runtimes_agree_at_other_shapes(tmp_path, runtime):
    module = small()
    engine = compile_small(module, tmp_path, runtime)
    x = torch.randn(4, 11, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = module(x).numpy()
    (y,) = engine(x.numpy())
    assert engine.runtime == runtime
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_second_compile_reuses_the_file(tmp_path, exports):
    first = compile_small(small(), tmp_path)
    stat = first.onnx_path.stat()
    second = compile_small(small(), tmp_path)
    assert len(exports) == 1 and second.onnx_path == first.onnx_path
    assert (second.onnx_path.stat().st_mtime_ns, second.onnx_path.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".onnx", ".sha256"]  # no temporaries left


def test_changed_weights_give_a_new_file(tmp_path, exports):
    module = small()
    first = compile_small(module, tmp_path).onnx_path
    with torch.no_grad():
        module.proj.bias[0] += 1
    second = compile_small(module, tmp_path).onnx_path
    assert first != second and first.exists() and len(exports) == 2


def test_changed_dynamic_axes_or_shapes_give_a_new_file(tmp_path):
    module = small()
    a = compile_small(module, tmp_path).onnx_path
    batch_only = {"x": {0: "n"}, "y": {0: "n"}}
    b = engines.compile(module, (torch.zeros(1, 3, 6),), ["x"], ["y"], batch_only, cache_dir=tmp_path)
    c = engines.compile(module, (torch.zeros(2, 3, 6),), ["x"], ["y"], SMALL_AXES, cache_dir=tmp_path)
    assert len({a, b.onnx_path, c.onnx_path}) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_cache_file_is_rebuilt(tmp_path, exports, damage):
    module = small()
    path = compile_small(module, tmp_path).onnx_path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
    engine = compile_small(module, tmp_path)
    assert len(exports) == 2 and engine.onnx_path.read_bytes() == data
    x = torch.randn(1, 4, 6)
    with torch.no_grad():
        np.testing.assert_allclose(engine(x.numpy())[0], module(x).numpy(), rtol=0, atol=1e-5)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("AFFBATCH_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache.cache_root() == tmp_path / "mine"
    assert compile_small(small(), None).onnx_path.parent == tmp_path / "mine" / "onnx"
    monkeypatch.delenv("AFFBATCH_CACHE_DIR")
    assert engine_cache.cache_root() == tmp_path / "xdg" / "affbatch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert engine_cache.cache_root() == Path.home() / ".cache" / "affbatch"


def test_bad_runtime_and_device_are_named(tmp_path):
    with pytest.raises(engines.EngineError, match="'tensorflow'.*onnxruntime"):
        compile_small(small(), tmp_path, runtime="tensorflow")
    with pytest.raises(engines.EngineError, match="'gpu0'"):
        engines.compile(small(), (torch.zeros(1, 3, 6),), ["x"], ["y"], SMALL_AXES, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(engines.RuntimeUnavailable, match="no CUDA device"):
            engines.compile(small(), (torch.zeros(1, 3, 6),), ["x"], ["y"], SMALL_AXES, device="cuda")


def test_engines_imports_neither_affbatch_nor_training(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import engines
        assert "torch" not in sys.modules, "import engines should stay cheap"
        import torch
        module = torch.nn.GRU(4, 3, num_layers=2, batch_first=True)
        for runtime in ("onnxruntime", "torch", "auto"):
            engine = engines.compile(module, (torch.zeros(1, 2, 4),), ["x"], ["y", "h"], runtime=runtime)
            engine(torch.zeros(1, 2, 4).numpy())
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("affbatch", "training"))
        assert not leaked, leaked
        """
    )
    env = {**os.environ, "AFFBATCH_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
