"""The CPU at its real limit: features read at run time, OpenVINO, bf16, and ``auto`` per model.

Runs on both kinds of machine: what depends on bf16 in hardware is tested with a monkeypatched
``engines.cpuinfo.detect`` where it is the refusal (so a machine with AMX tests the path of one
without), and skips with the reason where it needs the real thing. The accuracy of bf16 on real
faces is in test_precision_gates.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import engines
from engines import autotune, cpuinfo
from engines import build as engine_build
from tests.engines.engine_models import SPEC_IDS, SPECS, assert_close
from tests.engines.engine_models import reference as torch_reference

HAS_BF16 = cpuinfo.detect().bf16_unavailable() is None
NEEDS_BF16 = pytest.mark.skipif(not HAS_BF16, reason=f"no bf16 here: {cpuinfo.detect().bf16_unavailable()}")

INTEL_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni
"""
AMD_NO_BF16 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx2 avx512f
"""


def fake_cpu(text: str) -> cpuinfo.CpuInfo:
    model, flags = cpuinfo.parse_cpuinfo(text)
    return cpuinfo.CpuInfo(model, 2, flags)


@pytest.fixture
def no_bf16(monkeypatch):
    """This process sees a CPU without bf16 (the AMD EPYC of FACTS.md), ``auto`` not pinned."""
    monkeypatch.setattr(cpuinfo, "detect", lambda: fake_cpu(AMD_NO_BF16))
    monkeypatch.delenv(autotune.PIN_ENV, raising=False)


@pytest.fixture
def unpinned(monkeypatch, tmp_path):
    """``auto`` as a user gets it (not pinned to fp32), with a cache of this test's own."""
    monkeypatch.delenv(autotune.PIN_ENV, raising=False)
    monkeypatch.setenv("AFFBATCH_CACHE_DIR", str(tmp_path))


class Conv(torch.nn.Module):
    """A small convolutional model, dynamic in batch: what auto sees, seconds to tune."""

    bf16_runtimes = ("openvino", "torch")  # as a model whose bf16 accuracy is tested declares it

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 2),
        )  # fmt: skip

    def forward(self, x):
        return self.body(x)


def compile_conv(**kwargs) -> engines.Engine:
    """``Conv`` compiled; precision ``auto`` unless given (engines.compile's default is fp32)."""
    kwargs.setdefault("precision", "auto")
    x = torch.zeros(2, 3, 32, 32)
    return engines.compile(Conv().eval(), (x,), ["x"], ["y"], {"x": {0: "faces"}, "y": {0: "faces"}}, **kwargs)


# --- features ---------------------------------------------------------------------------------


def test_flags_are_read_from_cpuinfo_text():
    intel, amd = fake_cpu(INTEL_AMX), fake_cpu(AMD_NO_BF16)
    assert intel.model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert intel.features == ["amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f",
                              "avx2"]  # fmt: skip
    assert intel.bf16_unavailable() is None
    assert amd.features == ["avx512f", "avx2"]
    assert "AMD EPYC 7B12 has no bf16 arithmetic" in amd.bf16_unavailable()
    assert "not assumed" in cpuinfo.CpuInfo("?", 1, frozenset()).bf16_unavailable()


def test_this_machine_and_its_runtimes_agree_on_bf16():
    """The OS's flags and the runtimes' own reports say the same about bf16 here."""
    s = cpuinfo.summary()
    assert s["cpus"] >= 1 and s["model"]
    reports = s["runtimes"]
    assert reports["torch"]["mkldnn_bf16"] == s["bf16"]
    if isinstance(reports.get("openvino"), list):
        assert ("BF16" in reports["openvino"]) == s["bf16"]
    line = cpuinfo.describe(s)
    assert s["model"] in line and ("bf16: in hardware" in line) == s["bf16"]


# --- refusal where there is no bf16 (any machine, by a monkeypatched detect) -----------------


def test_without_bf16_auto_is_onnxruntime_fp32_and_bf16_is_refused(no_bf16):
    assert engines.resolve("auto", "cpu", "auto") == engines.Placement("onnxruntime", "cpu", "fp32")
    assert engines.resolve("openvino", "cpu", "auto") == engines.Placement("openvino", "cpu", "fp32")
    for runtime in ("auto", "openvino", "torch"):
        with pytest.raises(engines.RuntimeUnavailable, match="AMD EPYC 7B12 has no bf16 arithmetic.*use fp32"):
            engines.resolve(runtime, "cpu", "bf16")
    with pytest.raises(engines.RuntimeUnavailable, match="no bf16 arithmetic"):
        compile_conv(runtime="openvino", precision="bf16")
    with pytest.raises(engines.RuntimeUnavailable, match="no bf16 arithmetic"):
        compile_conv(runtime="torch", precision="bf16")
    assert autotune.candidates("auto", "auto", engine_build.cpu_runtimes()) == [("openvino", "fp32"),
                                                                              ("onnxruntime", "fp32")]  # fmt: skip
    engine = compile_conv()  # auto, auto: the fp32 floor, no tuning
    assert (engine.runtime, engine.precision) == ("onnxruntime", "fp32")


def test_fp16_on_the_cpu_is_refused_with_the_reason():
    with pytest.raises(engines.RuntimeUnavailable, match="fp16 on the CPU"):
        engines.resolve("auto", "cpu", "fp16")


def test_score_with_bf16_on_a_cpu_without_it_is_a_usage_error(no_bf16, make_clip, tmp_path):
    from typer.testing import CliRunner

    from affbatch.cli import app

    clip = make_clip("a.mp4", frames=3)
    result = CliRunner().invoke(app, ["score", str(clip), "--out", str(tmp_path / "o.arrow"), "--precision", "bf16",
                                      "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2
    assert "no bf16 arithmetic" in result.output and "Traceback" not in result.output


def test_engines_build_with_bf16_on_a_cpu_without_it_is_a_usage_error(no_bf16):
    from typer.testing import CliRunner

    from affbatch.cli import app

    result = CliRunner().invoke(app, ["engines", "build", "--precision", "bf16", "--device", "cpu"])
    assert result.exit_code == 2
    assert "--precision" in result.output and "no bf16 arithmetic" in result.output


def test_pinned_auto_is_fp32(monkeypatch):
    monkeypatch.setenv(autotune.PIN_ENV, "fp32")
    assert engines.resolve("auto", "cpu", "auto") == engines.Placement("onnxruntime", "cpu", "fp32")
    monkeypatch.setenv(autotune.PIN_ENV, "bf16")
    with pytest.raises(engines.RuntimeUnavailable, match="only fp32"):
        engines.resolve("auto", "cpu", "auto")


# --- OpenVINO -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_engines(tmp_path_factory):
    made: dict = {}
    folder = tmp_path_factory.mktemp("spec-onnx")

    def get(spec, runtime, precision):
        if (spec.name, runtime, precision) not in made:
            module = spec.make()
            engine = engines.compile(
                module, spec.example_inputs(), spec.input_names, spec.output_names, spec.dynamic_axes,
                runtime=runtime, device="cpu", cache_dir=folder, precision=precision,
            )  # fmt: skip
            made[spec.name, runtime, precision] = module, engine
        return made[spec.name, runtime, precision]

    return get


@NEEDS_BF16
@pytest.mark.parametrize("runtime", ["openvino", "torch"])
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_every_model_in_bf16_matches_torch_float32(spec, runtime, spec_engines):
    """bf16 within its stated tolerance of torch fp32 (random inputs; real faces: the gates)."""
    _, engine = spec_engines(spec, runtime, "bf16")
    assert (engine.runtime, engine.precision) == (runtime, "bf16")
    for size in spec.cpu_sizes:
        expected = torch_reference(spec, spec.make(), size)
        out = engine(*(x.numpy() for x in spec.inputs(size, 1)))
        assert all(o.dtype == e.dtype for o, e in zip(out, expected, strict=True))  # float32 out
        assert_close(out, expected, "bf16", f"{spec.name} {runtime} bf16 {size}")


def test_openvino_runs_the_precision_asked_with_the_cores_there(unpinned):
    engine = compile_conv(runtime="openvino", precision="fp32")
    assert engine.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert engine.compiled.get_property("INFERENCE_NUM_THREADS") == cpuinfo.cores() == engine.threads
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = Conv().eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(engine(x)[0], expected, rtol=0, atol=1e-5)
    y = engine(torch.from_numpy(x))[0]
    assert isinstance(y, torch.Tensor) and y.shape == (5, 2)


def test_openvino_compiled_models_are_cached_and_a_damaged_one_is_rebuilt(unpinned, tmp_path, caplog):
    from engines.catalog import entries

    compile_conv(runtime="openvino", precision="fp32")
    (entry,) = entries(kinds=["openvino"])
    assert entry.fields["precision"] == "fp32" and entry.fields["openvino"] and entry.problem is None
    stamp = entry.path.stat().st_mtime_ns
    compile_conv(runtime="openvino", precision="fp32")  # a hit: not written again
    assert entry.path.stat().st_mtime_ns == stamp
    data = bytearray(entry.path.read_bytes())
    data[-10] ^= 0xFF
    entry.path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="engines"):
        engine = compile_conv(runtime="openvino", precision="fp32")
    assert "does not match its sha256" in caplog.text
    assert engine(np.zeros((1, 3, 32, 32), np.float32))[0].shape == (1, 2)
    (entry,) = entries(kinds=["openvino"], verify=True)
    assert entry.problem is None


def test_onnxruntime_threads_are_the_cores_this_process_may_use():
    from engines.onnxruntime_engine import session_options

    assert session_options().intra_op_num_threads == cpuinfo.cores()


# --- auto on a CPU with bf16: measured per model, stored, reused ------------------------------


@NEEDS_BF16
def test_auto_measures_each_candidate_once_and_reuses_the_decision(unpinned, monkeypatch):
    placement = engines.resolve("auto", "cpu", "auto")
    assert placement == engines.Placement("auto", "cpu", "auto") and placement.per_model
    offered = autotune.candidates("auto", "auto", engine_build.cpu_runtimes())
    assert offered == [("openvino", "bf16"), ("torch", "bf16"), ("openvino", "fp32"), ("onnxruntime", "fp32")]
    engine = compile_conv()
    from engines.catalog import entries

    (decision,) = entries(kinds=["autotune"])
    record = json.loads(decision.path.read_text())
    timed = {k: v for k, v in record["timings"].items() if "median_s" in v}
    assert set(record["timings"]) == {f"{r} {p}" for r, p in offered}
    fastest = min(timed, key=lambda k: timed[k]["median_s"])
    assert f"{engine.runtime} {engine.precision}" == fastest == " ".join(record["choice"])
    assert record["shapes"] == [[autotune.TUNE_SIZES["faces"], 3, 32, 32]]

    def no_timing(*args):
        raise AssertionError("a stored decision must not be timed again")

    monkeypatch.setattr(autotune, "time_engine", no_timing)
    again = compile_conv()
    assert (again.runtime, again.precision) == (engine.runtime, engine.precision)


@NEEDS_BF16
def test_auto_offers_bf16_only_in_the_runtimes_a_module_declares(unpinned):
    available = engine_build.cpu_runtimes()
    assert autotune.candidates("auto", "auto", available, ()) == [("openvino", "fp32"), ("onnxruntime", "fp32")]
    assert autotune.candidates("auto", "auto", available, ("openvino",))[0] == ("openvino", "bf16")
    assert ("torch", "bf16") not in autotune.candidates("auto", "auto", available, ("openvino",))
    # asked for explicitly, bf16 is the user's choice: every runtime that runs it
    assert autotune.candidates("auto", "bf16", available, ()) == [("openvino", "bf16"), ("torch", "bf16")]

    class Undeclared(Conv):
        bf16_runtimes = None

    x = torch.zeros(2, 3, 32, 32)
    engine = engines.compile(Undeclared().eval(), (x,), ["x"], ["y"], {"x": {0: "faces"}, "y": {0: "faces"}},
                             precision="auto")  # fmt: skip
    assert engine.precision == "fp32"


@NEEDS_BF16
def test_bf16_with_runtime_auto_chooses_between_the_bf16_runtimes(unpinned):
    assert autotune.candidates("auto", "bf16", engine_build.cpu_runtimes()) == [("openvino", "bf16"),
                                                                              ("torch", "bf16")]  # fmt: skip
    assert engines.resolve("auto", "cpu", "bf16") == engines.Placement("auto", "cpu", "bf16")
    assert compile_conv(precision="bf16").precision == "bf16"
    assert engines.resolve("onnxruntime", "cpu", "auto") == engines.Placement("onnxruntime", "cpu", "fp32")


@NEEDS_BF16
def test_torch_bf16_on_the_cpu_is_channels_last_autocast_with_float32_outputs():
    engine = compile_conv(runtime="torch", precision="bf16")
    assert engine.channels_last and engine.precision == "bf16"
    y = engine(np.zeros((3, 3, 32, 32), np.float32))[0]
    assert y.dtype == np.float32 and y.shape == (3, 2)


# --- the precision used is recorded, and part of the resume key -----------------------------


def test_precision_is_in_the_metadata_and_the_resume_key(make_clip, tmp_path):
    from affbatch.pipeline import ScoreOptions
    from affbatch.run import score_run
    from tests.support.arrow import read

    clip = make_clip("a.mp4", frames=4)
    out = tmp_path / "t.arrow"
    fp32 = ScoreOptions(model="faces", device="cpu", runtime="onnxruntime", precision="fp32")
    summary = score_run([clip], out, fp32)
    assert summary.failed == [] and summary.metadata["precision"] == "detector: fp32, affect: none"
    assert read(out).schema.metadata[b"precision"] == b"detector: fp32, affect: none"
    assert score_run([clip], out, fp32, resume=True).reused == 1
    if HAS_BF16:  # another precision is another result: scored again, not reused
        bf16 = ScoreOptions(model="faces", device="cpu", runtime="openvino", precision="bf16")
        again = score_run([clip], out, bf16, resume=True)
        assert again.reused == 0 and again.metadata["precision"] == "detector: bf16, affect: none"
        assert read(out).schema.metadata[b"precision"] == b"detector: bf16, affect: none"
