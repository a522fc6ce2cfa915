"""engines on an NVIDIA GPU: every exported model on torch CUDA (fp32/fp16/bf16, CUDA graphs) and
TensorRT (fp32/fp16/bf16) against torch float32 on the CPU, the TensorRT engine cache on a real
GPU, and inputs and outputs that stay on the device.

Every test is marked ``gpu``: skipped without a CUDA device, failed instead when
AFFBATCH_REQUIRE_GPU=1 (conftest.py). TensorRT tests also skip where TensorRT is not installed
(it cannot be, on the machines these tests were written on), unless AFFBATCH_REQUIRE_TENSORRT=1.
Run with ``AFFBATCH_REQUIRE_GPU=1 pytest -m gpu tests/engines/test_engines.py tests/engines/test_engines_gpu.py``
(scripts/gpu_check.py does, and benchmarks after).
"""

from __future__ import annotations

import os

import pytest
import torch

import engines
from tests.engines.engine_models import SPEC_IDS, SPECS, assert_close, reference

pytestmark = pytest.mark.gpu

REQUIRE_TENSORRT = os.environ.get("AFFBATCH_REQUIRE_TENSORRT") == "1"

#: (runtime, precision, options) combinations checked against torch float32 on the CPU.
CONFIGS = [
    ("torch", "fp32", {}),
    ("torch", "fp16", {}),
    ("torch", "bf16", {}),
    ("torch", "fp16", {"cuda_graphs": True}),
    ("tensorrt", "fp32", {}),
    ("tensorrt", "fp16", {}),
    ("tensorrt", "bf16", {}),
]
CONFIG_IDS = [f"{r}-{p}" + ("-graphs" if o else "") for r, p, o in CONFIGS]


@pytest.fixture(scope="module", autouse=True)
def exact_float32():
    """torch's CUDA float32 without TF32, so that "fp32" means float32 (cuDNN convolutions use
    TF32 by default); restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def need_tensorrt() -> None:
    why = engines.availability()["tensorrt"]["cuda"]
    if why is not None:
        if REQUIRE_TENSORRT:
            pytest.fail(f"AFFBATCH_REQUIRE_TENSORRT=1 but tensorrt: {why}", pytrace=False)
        pytest.skip(f"tensorrt: {why}")


@pytest.fixture(scope="module")
def compiled():
    """One engine per (model, config), compiled on first use; references cached per size."""
    made: dict = {}

    def get(spec, runtime, precision, options):
        key = spec.name, runtime, precision, tuple(sorted(options.items()))
        if key not in made:
            if runtime == "tensorrt":
                need_tensorrt()
            module = spec.make()
            try:
                engine = engines.compile(
                    module, spec.example_inputs(), spec.input_names, spec.output_names, spec.dynamic_axes,
                    runtime=runtime, device="cuda", precision=precision, options=engines.EngineOptions(**options),
                )  # fmt: skip
            except engines.RuntimeUnavailable as exc:  # bf16 on a GPU or TensorRT without it
                made[key] = exc
            else:
                made[key] = module, engine
        if isinstance(made[key], Exception):
            pytest.skip(str(made[key]))
        return made[key]

    return get


_references: dict = {}


def cpu_reference(spec, size):
    if (spec.name, size) not in _references:
        _references[spec.name, size] = reference(spec, spec.make(), size)
    return _references[spec.name, size]


@pytest.mark.parametrize(("runtime", "precision", "options"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_every_model_matches_torch_float32_on_cuda(spec, runtime, precision, options, compiled):
    _, engine = compiled(spec, runtime, precision, options)
    assert (engine.runtime, engine.device, engine.precision) == (runtime, "cuda:0", precision)
    for size in spec.gpu_sizes:
        expected = cpu_reference(spec, size)
        inputs = [x.cuda() for x in spec.inputs(size, 1)]
        out = engine(*inputs)
        assert all(t.device.type == "cuda" for t in out)  # torch in, torch out, on the device
        assert_close(out, expected, precision, f"{spec.name} {runtime} {precision} {size}")
    # numpy in, numpy out: the convenience path, one copy each way
    size = spec.gpu_sizes[0]
    assert_close(engine(*(x.numpy() for x in spec.inputs(size, 1))), cpu_reference(spec, size), precision, "numpy")


@pytest.mark.parametrize("runtime", ["torch", "tensorrt"])
def test_cuda_inputs_never_visit_the_host(runtime, compiled):
    """With torch's sync debug mode at "error", any device-to-host copy or synchronisation in
    the engine's own code raises."""
    spec = SPECS[SPEC_IDS.index("vggface-cnn")]
    _, engine = compiled(spec, runtime, "fp16", {})
    (x,) = (t.cuda() for t in spec.inputs((8,), 2))
    engine(x)  # warm
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        (features,) = engine(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert features.device.type == "cuda" and features.shape == (8, 4096)


def test_auto_picks_tensorrt_or_torch_on_cuda():
    placement = engines.resolve("auto", "auto")
    assert placement.device == "cuda:0"
    assert placement.runtime == ("tensorrt" if engines.availability()["tensorrt"]["cuda"] is None else "torch")
    assert engines.resolve("torch", "cuda") == engines.Placement("torch", "cuda:0", "fp32")


def test_tensorrt_engine_cache_on_the_gpu(tmp_path, monkeypatch):
    """Built once, loaded from the cache after; a damaged entry is rebuilt; keys name the GPU."""
    need_tensorrt()
    from engines import engine_cache
    from engines import tensorrt_engine as te

    builds = []
    real = te.build_plan
    monkeypatch.setattr(te, "build_plan", lambda *a, **k: builds.append(1) or real(*a, **k))
    spec = SPECS[SPEC_IDS.index("vggface-temporal")]
    options = engines.EngineOptions(engine_dir=tmp_path, profiles={"batch": (1, 4, 8), "time": (1, 80, 96)})

    def compile_it():
        return engines.compile(
            spec.make(), spec.example_inputs(), spec.input_names, spec.output_names, spec.dynamic_axes,
            runtime="tensorrt", device="cuda", options=options, cache_dir=tmp_path / "onnx",
        )  # fmt: skip

    first = compile_it()
    second = compile_it()
    assert len(builds) == 1
    (entry,) = tmp_path.glob("*.engine")
    header, _ = engine_cache.read_header(entry)
    assert header["fields"]["gpu"] == torch.cuda.get_device_name(0)
    assert header["fields"]["profile"]["features"][2] == [8, 96, 4096]
    assert list(tmp_path.glob("timing-*.cache"))  # the timing cache was kept
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])
    third = compile_it()
    assert len(builds) == 2
    size = (3, 80)
    for engine in (first, second, third):
        assert_close(engine(*spec.inputs(size, 1)), cpu_reference(spec, size), "fp32", "cached engine")
    with pytest.raises(engines.EngineError, match="dimension 1 is 97; this engine was built for 1..96"):
        first(*spec.inputs((1, 97), 1))
