"""engines: ONNX Runtime vs torch parity on the paper's model, the exported graph, the cache, isolation.

The full model (VGG-16 at 96x96, 5.7 GFLOPs a frame) is exported once per module; the cache's
behaviour is tested on a small module with the same kind of layers. Then: every exported model
on every runtime available here against torch float32 (``engine_models``), their ONNX graphs
against TensorRT's parser support list, the engine cache with a fake builder (hit, rebuild,
two processes), ``auto`` resolution and the errors without a GPU or TensorRT, and the CLI.
GPU runs of the same specs are in test_engines_gpu.py.
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
from affbatch.models.vggface_gru_attn import AffectState
from engines import build as engine_build
from engines import cache as engine_cache
from engines import cpuinfo, tensorrt_ops
from engines.onnx_export import OPSET, CastPrecision, onnx_ops
from tests.engines.engine_models import SPEC_IDS, SPECS, TOLERANCE, assert_close
from tests.engines.engine_models import reference as torch_reference

ROOT = Path(__file__).resolve().parents[2]
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
def ort_model(vggface_model, tmp_path_factory) -> engines.Engine:
    return engines.compile(
        vggface_model, (crops(1, 2),), ["frames"], ["va", *STATE_NAMES], MODEL_AXES, runtime="onnxruntime",
        cache_dir=tmp_path_factory.mktemp("onnx"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(vggface_model):
    """torch's outputs on the largest case; smaller cases are its [:B, :T] (the model is causal
    and sequences in a batch are independent), which spares the CPU a second VGG pass."""
    x = crops(3, 33)
    with torch.no_grad():
        y, state = vggface_model(x)
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
    assert options.intra_op_num_threads == cpuinfo.cores()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert ort_model.session.get_providers() == ["CPUExecutionProvider"]
    assert ort_model.runtime == "onnxruntime" and ort_model.device == "cpu"


def test_torch_runtime_is_the_module_under_inference_mode(vggface_model, reference):
    x, y, _ = reference
    engine = engines.compile(vggface_model, (x[:1, :2],), ["frames"], ["va", *STATE_NAMES], MODEL_AXES, runtime="torch")
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


def test_state_inputs_export_and_continue_a_sequence(vggface_model, tmp_path):
    g = torch.Generator().manual_seed(4)
    f = torch.randn(2, 40, 4096, generator=g).clamp(min=0)
    with torch.no_grad():
        y_full, _ = vggface_model.temporal(f)
        y_head, state = vggface_model.temporal(f[:, :9])
    wrapper = StatefulTemporal(vggface_model.temporal)
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


#: (runtime, device) pairs; the CUDA ones are marked gpu (skipped without one, see conftest.py).
RUNTIME_DEVICES = [
    ("onnxruntime", "cpu"),
    ("torch", "cpu"),
    pytest.param("torch", "cuda", marks=pytest.mark.gpu),
    pytest.param("tensorrt", "cuda", marks=pytest.mark.gpu),
]


@pytest.mark.parametrize(("runtime", "device"), RUNTIME_DEVICES)
def test_small_gru_on_every_runtime_and_device(tmp_path, runtime, device):
    if runtime == "tensorrt" and (why := engines.availability()["tensorrt"]["cuda"]):
        pytest.skip(f"tensorrt: {why}")
    module = small()
    with torch.no_grad():
        x = torch.randn(5, 9, 6, generator=torch.Generator().manual_seed(3))
        expected = module(x).numpy()
    engine = engines.compile(
        module, (torch.zeros(1, 3, 6),), ["x"], ["y"], SMALL_AXES, runtime=runtime, device=device, cache_dir=tmp_path,
        options=engines.EngineOptions(engine_dir=tmp_path / "trt"),
    )  # fmt: skip
    assert (engine.runtime, engine.device.split(":")[0]) == (runtime, device)
    (y,) = engine(x.numpy())
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)
    (y,) = engine(x.to(engine.device))
    assert y.device.type == device
    np.testing.assert_allclose(y.cpu().numpy(), expected, rtol=0, atol=1e-5)


def test_second_compile_reuses_the_file(tmp_path, exports):
    first = compile_small(small(), tmp_path)
    stat = first.onnx_path.stat()
    second = compile_small(small(), tmp_path)
    assert len(exports) == 1 and second.onnx_path == first.onnx_path
    assert (second.onnx_path.stat().st_mtime_ns, second.onnx_path.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    # The graph, its description, its digest and its lock; no temporaries left.
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".lock", ".onnx", ".sha256"]


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
        with pytest.raises(engines.RuntimeUnavailable, match="cuda: no device"):
            engines.compile(small(), (torch.zeros(1, 3, 6),), ["x"], ["y"], SMALL_AXES, device="cuda")


def test_engines_imports_neither_affbatch_nor_training(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import engines
        assert "torch" not in sys.modules, "import engines should stay cheap"
        import torch
        module = torch.nn.GRU(4, 3, num_layers=2, batch_first=True)
        for runtime in ("onnxruntime", "torch", "openvino", "auto"):
            engine = engines.compile(module, (torch.zeros(1, 2, 4),), ["x"], ["y", "h"], runtime=runtime)
            engine(torch.zeros(1, 2, 4).numpy())
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("affbatch", "training"))
        assert not leaked, leaked
        """
    )
    env = {**os.environ, "AFFBATCH_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# --- every exported model on every runtime available here, against torch float32 ------------


@pytest.fixture(scope="module")
def spec_engines(tmp_path_factory):
    """Compiled engines per (model, runtime), made once for the module."""
    made: dict = {}
    folder = tmp_path_factory.mktemp("spec-onnx")

    def get(spec, runtime):
        if (spec.name, runtime) not in made:
            module = spec.make()
            engine = engines.compile(
                module, spec.example_inputs(), spec.input_names, spec.output_names, spec.dynamic_axes,
                runtime=runtime, device="cpu", cache_dir=folder,
            )  # fmt: skip
            made[spec.name, runtime] = module, engine
        return made[spec.name, runtime]

    return get


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch", "openvino"])
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_every_model_matches_torch_float32(spec, runtime, spec_engines):
    module, engine = spec_engines(spec, runtime)
    assert (engine.runtime, engine.device, engine.precision) == (runtime, "cpu", "fp32")
    for size in spec.cpu_sizes:
        expected = torch_reference(spec, module, size)
        inputs = spec.inputs(size, 1)
        assert_close(engine(*(x.numpy() for x in inputs)), expected, "fp32", f"{spec.name} {runtime} {size}")
        # torch tensors in, torch tensors out (on the CPU here), the same numbers
        out = engine(*inputs)
        assert all(isinstance(t, torch.Tensor) for t in out)
        assert_close(out, expected, "fp32", f"{spec.name} {runtime} {size} (torch in)")


def test_tolerances_are_stated_per_precision():
    assert set(TOLERANCE) == set(engines.PRECISIONS)
    assert TOLERANCE["fp32"] < TOLERANCE["fp16"] < TOLERANCE["bf16"]


class Pair(torch.nn.Module):
    def forward(self, a, b):
        return a + b


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_mixed_numpy_and_torch_inputs_are_refused(tmp_path, runtime):
    x = torch.zeros(2, 3)
    engine = engines.compile(Pair(), (x, x), ["a", "b"], ["y"], runtime=runtime, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="all numpy arrays or all torch tensors, got ndarray, Tensor"):
        engine(x.numpy(), x)
    with pytest.raises(TypeError, match="engine takes 2 inputs"):
        engine(x)


# --- the exported graphs against TensorRT's ONNX parser --------------------------------------

#: Op types of each exported graph, as the TorchScript exporter writes them at opset 17.
EXPECTED_OPS = {
    "detector": {"Add", "Cast", "Concat", "Constant", "Conv", "Gather", "LeakyRelu", "Relu", "Reshape", "Resize",
                 "Shape", "Slice", "Softmax", "Transpose", "Unsqueeze"},
    "prior": {"Add", "Constant", "Conv", "MatMul", "MaxPool", "Mul", "ReduceMean", "ReduceSum", "Relu", "Softmax"},
    "vggface-cnn": {"Conv", "Flatten", "Gemm", "Identity", "MaxPool", "Relu"},
    "vggface-temporal": {"Add", "Cast", "Concat", "Constant", "ConstantOfShape", "GRU", "Gather", "MatMul", "Mul",
                         "Not", "Range", "ReduceSum", "Shape", "Slice", "Softmax", "Squeeze", "Tanh", "Transpose",
                         "Unsqueeze", "Where"},
}  # fmt: skip


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_exported_graphs_use_only_ops_tensorrt_parses(spec, spec_engines):
    _, engine = spec_engines(spec, "onnxruntime")
    ops = onnx_ops(engine.onnx_path)
    assert set(ops) <= tensorrt_ops.SUPPORTED_OPS, set(ops) - tensorrt_ops.SUPPORTED_OPS
    assert set(ops) == EXPECTED_OPS[spec.name]  # a new op type is a new question for TensorRT
    assert tensorrt_ops.check_graph(engine.onnx_path) == []
    assert not {"Loop", "Scan", "If"} & set(ops)  # recurrences as native ops, no control flow
    if spec.name == "vggface-temporal":
        assert ops["GRU"] == 2  # the 2-layer GRU as two ONNX GRU ops, not unrolled


def test_resnet50_detector_graph_uses_only_ops_tensorrt_parses(tmp_path):
    """--detector CHECKPOINT's RetinaFace ResNet-50 (random weights: the graph is what counts)."""
    from affbatch.models.retinaface import RetinaFace
    from engines.cache import cached_onnx

    spec = SPECS[SPEC_IDS.index("detector")]
    example = spec.example_inputs()
    path = cached_onnx(
        RetinaFace("resnet50").eval(), example, spec.input_names, spec.output_names, spec.dynamic_axes, tmp_path
    )
    ops = onnx_ops(path)
    assert set(ops) == EXPECTED_OPS["detector"] - {"LeakyRelu"} | {"MaxPool"}
    assert tensorrt_ops.check_graph(path) == []


def test_opset_and_support_list_are_recorded():
    import onnx

    assert OPSET == 17 and tensorrt_ops.OPSET_RANGE[0] <= OPSET <= tensorrt_ops.OPSET_RANGE[1]
    assert "TensorRT 10.15" in tensorrt_ops.SOURCE and "operators.md" in tensorrt_ops.SOURCE
    assert {"GRU", "Conv", "Resize", "Softmax", "Where"} <= tensorrt_ops.SUPPORTED_OPS
    assert not {"Unique", "SequenceAt", "Det", "StringNormalizer"} & tensorrt_ops.SUPPORTED_OPS
    # Every name in the list is an ONNX op (no typos), bar the experimental ops ONNX has since dropped.
    known = {s.name for s in onnx.defs.get_all_schemas_with_history()}
    assert tensorrt_ops.SUPPORTED_OPS - known == {"ImageScaler", "ParametricSoftplus", "ScaledTanh"}


def _graph(tmp_path, nodes, inputs, initializers=(), opset=OPSET):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], list(initializers),
    )  # fmt: skip
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def test_check_graph_finds_what_tensorrt_refuses(tmp_path):
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    ok = _graph(tmp_path, [helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], [("x", [3])], [axes])
    assert tensorrt_ops.check_graph(ok) == []
    unsupported = _graph(tmp_path, [helper.make_node("Det", ["x"], ["y"])], [("x", [3, 3])])
    assert tensorrt_ops.check_graph(unsupported) == ["Det is not supported by TensorRT's ONNX parser"]
    dynamic_axes = _graph(
        tmp_path, [helper.make_node("Unsqueeze", ["x", "a"], ["y"])], [("x", [3]), ("a", [1])]
    )  # axes from a graph input: not a constant
    assert "must be a constant" in tensorrt_ops.check_graph(dynamic_axes)[0]
    gru = helper.make_node("GRU", ["x", "w", "r"], ["y"], hidden_size=2, layout=1)
    gru_graph = _graph(tmp_path, [gru], [("x", [1, 2, 3]), ("w", None), ("r", None)])
    assert "layout 1" in tensorrt_ops.check_graph(gru_graph)[0]
    resize = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic")
    assert "mode 'cubic'" in tensorrt_ops.check_graph(_graph(tmp_path, [resize], [("x", [1]), ("s", [1])]))[0]
    old = _graph(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [("x", [1])], opset=7)
    assert "opset 7" in tensorrt_ops.check_graph(old)[0]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_float16_graphs_for_tensorrt_11_are_valid_and_supported(spec, tmp_path):
    """TensorRT 11 builds fp16 from a float16 graph (no FP16 flag): valid ONNX, same ops, float32 I/O."""
    import onnx

    from engines.cache import cached_onnx

    wrapped = CastPrecision(spec.make(), torch.float16)
    path = cached_onnx(wrapped, spec.example_inputs(), spec.input_names, spec.output_names, spec.dynamic_axes, tmp_path)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    assert tensorrt_ops.check_graph(path) == []
    assert {i.type.tensor_type.elem_type for i in (*graph.graph.input, *graph.graph.output)} == {onnx.TensorProto.FLOAT}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)


# --- auto, and clean errors without a GPU or TensorRT ----------------------------------------

NO_TENSORRT = engines.availability()["tensorrt"]["cuda"] is not None


@pytest.mark.skipif(not NO_TENSORRT, reason="TensorRT is installed here")
def test_tensorrt_without_tensorrt_is_a_clean_error(tmp_path):
    with pytest.raises(engines.RuntimeUnavailable, match="^tensorrt: not installed"):
        compile_small(small(), tmp_path, runtime="tensorrt")
    assert engines.availability()["tensorrt"] == {"cpu": "not installed (pip install 'affbatch[gpu]')"} | {
        "cuda": "not installed (pip install 'affbatch[gpu]')"
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_no_gpu_gives_cpu_runtimes_and_clean_errors(tmp_path):
    assert engines.resolve("auto", "auto") == engines.Placement("onnxruntime", "cpu", "fp32")
    assert engines.availability()["torch"]["cuda"].startswith("no device")
    for runtime in ("torch", "onnxruntime", "auto"):
        with pytest.raises(engines.RuntimeUnavailable, match="device cuda: cuda: no device"):
            engines.resolve(runtime, "cuda")
    with pytest.raises(engines.RuntimeUnavailable, match="fp16 on the CPU: no runtime here computes in it"):
        engines.compile(small(), (torch.zeros(1, 3, 6),), ["x"], ["y"], SMALL_AXES, runtime="torch", precision="fp16")
    with pytest.raises(engines.RuntimeUnavailable, match="onnxruntime runs fp32 here, not bf16"):
        engines.compile(
            small(), (torch.zeros(1, 3, 6),), ["x"], ["y"], SMALL_AXES, runtime="onnxruntime", precision="bf16"
        )
    with pytest.raises(engines.EngineError, match="precision 'int8': choose one of auto, fp32, fp16, bf16"):
        engines.compile(small(), (torch.zeros(1, 3, 6),), ["x"], ["y"], SMALL_AXES, precision="int8")


def test_auto_prefers_tensorrt_then_torch_on_cuda_and_says_so_once(monkeypatch, caplog):
    """The decision itself, on CPU: TensorRT importable -> tensorrt; not -> torch, one warning."""
    from engines import tensorrt_engine

    monkeypatch.setattr(engine_build, "_said", set())
    monkeypatch.setattr(tensorrt_engine, "available", lambda: None)
    assert engine_build.resolve_runtime("auto", "cuda:0") == "tensorrt"
    assert engine_build.resolve_runtime("auto", "cpu") == "onnxruntime"
    with pytest.raises(engines.RuntimeUnavailable, match="tensorrt: runs on CUDA devices only"):
        engine_build.resolve_runtime("tensorrt", "cpu")
    monkeypatch.setattr(tensorrt_engine, "available", lambda: "not installed (pip install 'affbatch[gpu]')")
    with caplog.at_level("INFO", logger="engines"):
        for _ in range(3):
            assert engine_build.resolve_runtime("auto", "cuda:0") == "torch"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "runtime auto: tensorrt: not installed" in warnings[0].getMessage()
    assert "using torch on cuda:0" in warnings[0].getMessage()


def test_a_broken_tensorrt_install_is_reported_not_raised(monkeypatch):
    """torch-tensorrt and TensorRT wheels without their libraries raise plain Exceptions on import."""
    import builtins

    from engines import tensorrt_engine

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "tensorrt":
            raise Exception("Could not find libnvinfer.so.11")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert tensorrt_engine.available() == "installed but does not import: Could not find libnvinfer.so.11"
