"""engines: the engine cache (keys, verification, rebuilds, two processes building at once) with a
fake builder, shape profiles, the cache catalog, and the command line (engines build/list/clear,
info, clean errors without TensorRT). All on the CPU: the builder is injected.
"""

from __future__ import annotations

import multiprocessing
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import engines
from engines import catalog
from engines import engine_cache as plans
from engines.locking import file_lock
from engines.onnx_export import OPSET
from engines.profiles import DEFAULT_RANGES, check_shapes, make_profile, profile_json, split_axis

NO_TENSORRT = engines.availability()["tensorrt"]["cuda"] is not None


# --- the engine cache (TensorRT plans), with a fake builder ------------------------------------

FIELDS = {
    "onnx_sha256": "ab" * 32,
    "tensorrt": "10.15.1",
    "gpu": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0",
    "precision": "fp16",
    "profile": {"crops": [[1, 3, 96, 96], [32, 3, 96, 96], [256, 3, 96, 96]]},
}


class FakeBuilder:
    def __init__(self, payload: bytes = b"plan-" + bytes(range(256))):
        self.payload, self.calls = payload, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.payload


def test_engine_key_changes_with_every_field():
    key = plans.entry_key(FIELDS)
    assert key == plans.entry_key(dict(reversed(list(FIELDS.items()))))  # order does not matter
    for name, other in [
        ("onnx_sha256", "cd" * 32), ("tensorrt", "11.0.0"), ("gpu", "NVIDIA A100-SXM4-80GB"),
        ("compute_capability", "8.0"), ("precision", "fp32"),
        ("profile", {"crops": [[1, 3, 96, 96], [64, 3, 96, 96], [256, 3, 96, 96]]}),
    ]:  # fmt: skip
        assert plans.entry_key({**FIELDS, name: other}) != key, name


def test_engine_cache_hit_builds_once(tmp_path):
    build = FakeBuilder()
    assert plans.load_or_build(tmp_path, FIELDS, build) == (build.payload, True)
    assert plans.load_or_build(tmp_path, FIELDS, build) == (build.payload, False)
    assert build.calls == 1
    (entry,) = tmp_path.glob("*.engine")
    assert entry.stem == plans.entry_key(FIELDS)
    header, _ = plans.read_header(entry)
    assert header["fields"] == FIELDS and header["payload_bytes"] == len(build.payload)
    assert not list(tmp_path.glob(".*.tmp"))
    # another precision is another entry, built on its own
    assert plans.load_or_build(tmp_path, {**FIELDS, "precision": "fp32"}, build)[1] is True
    assert build.calls == 2 and len(list(tmp_path.glob("*.engine"))) == 2


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[:-10])
    elif how == "flip-payload":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0x40]))
    elif how == "bad-magic":
        path.write_bytes(b"X" + data[1:])
    elif how == "garbage-header":
        start = len(plans.MAGIC) + 8
        path.write_bytes(data[:start] + b"{not json" + data[start + 9 :])
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncate", "flip-payload", "bad-magic", "garbage-header", "empty"])
def test_corrupt_engine_entry_is_rebuilt_never_loaded(tmp_path, how, caplog):
    build = FakeBuilder()
    plans.load_or_build(tmp_path, FIELDS, build)
    path = plans.entry_path(tmp_path, FIELDS)
    _damage(path, how)
    with pytest.raises(plans.CorruptEntry):
        plans.read_entry(path, FIELDS)
    with caplog.at_level("WARNING", logger="engines"):
        payload, built = plans.load_or_build(tmp_path, FIELDS, build)
    assert (payload, built, build.calls) == (build.payload, True, 2)
    assert "unusable" in caplog.text
    assert plans.read_entry(path, FIELDS) == build.payload  # repaired on disk


def test_entry_built_for_another_gpu_is_rebuilt(tmp_path, caplog):
    """An entry whose header names other key fields (copied from another machine, or a key
    collision) is not loaded even though its payload is intact."""
    mine, theirs = FIELDS, {**FIELDS, "gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}
    path = plans.entry_path(tmp_path, mine)
    plans.write_entry(path, theirs, b"their plan")
    with pytest.raises(plans.CorruptEntry, match="compute_capability: '8.0' != '9.0'"):
        plans.read_entry(path, mine)
    build = FakeBuilder()
    with caplog.at_level("WARNING", logger="engines"):
        assert plans.load_or_build(tmp_path, mine, build) == (build.payload, True)
    assert "built for something else" in caplog.text


def test_force_rebuilds_and_failed_builds_leave_nothing(tmp_path):
    build = FakeBuilder()
    plans.load_or_build(tmp_path, FIELDS, build)
    assert plans.load_or_build(tmp_path, FIELDS, build, force=True)[1] is True and build.calls == 2

    def broken() -> bytes:
        raise RuntimeError("builder crashed")

    other = {**FIELDS, "precision": "bf16"}
    with pytest.raises(RuntimeError, match="builder crashed"):
        plans.load_or_build(tmp_path, other, broken)
    with pytest.raises(TypeError, match="not bytes"):
        plans.load_or_build(tmp_path, other, lambda: None)
    assert not plans.entry_path(tmp_path, other).exists() and not list(tmp_path.glob(".*.tmp"))
    assert plans.load_or_build(tmp_path, other, build)[1] is True  # the lock was released


def test_two_processes_building_one_engine_make_one_valid_file(tmp_path):
    from tests.engines.engine_cache_worker import PAYLOAD, build_entry

    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding ORT and torch threads
    barrier = ctx.Barrier(2)
    builds, results = tmp_path / "builds.log", [tmp_path / "a", tmp_path / "b"]
    folder = tmp_path / "engines"
    workers = [
        ctx.Process(target=build_entry, args=(str(folder), FIELDS, str(builds), barrier, str(r))) for r in results
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(builds.read_text().split()) == 1  # one process built, the other waited and loaded
    outcomes = sorted(r.read_bytes() for r in results)
    assert outcomes == [b"built:" + PAYLOAD, b"loaded:" + PAYLOAD]
    assert plans.read_entry(plans.entry_path(folder, FIELDS), FIELDS) == PAYLOAD
    assert sorted(p.suffix for p in folder.iterdir()) == [".engine", ".lock"]  # no temporaries


# --- shape profiles ---------------------------------------------------------------------------


def test_profile_from_dynamic_axes_defaults_and_overrides():
    names, shapes = ["frames", "hidden"], [(1, 3, 4096), (2, 1, 128)]
    axes = {"frames": {0: "batch", 1: "time"}, "hidden": {1: "batch"}}
    profile = make_profile(names, shapes, axes)
    assert profile["frames"] == ((1, 1, 4096), (32, 80, 4096), (256, 256, 4096))
    assert profile["hidden"] == ((2, 1, 128), (2, 32, 128), (2, 256, 128))  # shares "batch"
    narrow = make_profile(names, shapes, axes, {"time": (1, 80, 80)})
    assert narrow["frames"][2] == (256, 80, 4096)
    other = make_profile(["x"], [(5, 7)], {"x": {1: "steps"}})  # a name without a default range
    assert other["x"] == ((5, 1), (5, 7), (5, 256))
    assert profile_json(profile)["frames"] == [[1, 1, 4096], [32, 80, 4096], [256, 256, 4096]]
    assert DEFAULT_RANGES["time"][1] == 80  # tuned for the paper's 80-frame windows
    with pytest.raises(engines.EngineError, match=r"profiles\['time'\]"):
        engines.EngineOptions(profiles={"time": (8, 4, 16)})


def test_profile_shape_checks_and_the_split_axis():
    axes = {"crops": {0: "faces"}, "features": {0: "faces"}}
    assert split_axis(["crops"], ["features"], axes) == "faces"
    assert split_axis(["features"], ["va"], {"features": {1: "time"}, "va": {1: "time"}}) is None
    profile = make_profile(["crops"], [(2, 3, 96, 96)], axes)
    check_shapes(profile, {"crops": (300, 3, 96, 96)}, split="faces")  # run in chunks of 256
    with pytest.raises(engines.EngineError, match="dimension 0 is 300; this engine was built for 1..256"):
        check_shapes(profile, {"crops": (300, 3, 96, 96)})
    with pytest.raises(engines.EngineError, match=r"dimension 2 is 64; .*96..96 \(a static dimension\)"):
        check_shapes(profile, {"crops": (4, 3, 64, 96)}, split="faces")


# --- what the caches hold, and the command line ------------------------------------------------


def test_catalog_lists_and_clears_entries(tmp_path):
    gru = torch.nn.GRU(4, 3, num_layers=2, batch_first=True)
    engines.compile(gru, (torch.zeros(1, 2, 4),), ["x"], ["y", "h"], runtime="onnxruntime", cache_dir=tmp_path / "onnx")
    plans.write_entry(plans.entry_path(tmp_path / "tensorrt", FIELDS), FIELDS, b"plan")
    other = {**FIELDS, "precision": "fp32"}
    damaged = plans.entry_path(tmp_path / "tensorrt", other)
    plans.write_entry(damaged, other, b"plan")
    _damage(damaged, "flip-payload")
    (tmp_path / "tensorrt" / "timing-trt10.15.1-NVIDIA-H100-sm9.0.cache").write_bytes(b"timings")
    found = {(e.kind, e.key): e for e in catalog.entries(tmp_path, verify=True)}
    assert sorted(k for k, _ in found) == ["onnx", "tensorrt", "tensorrt", "timing"]
    (onnx_entry,) = [e for e in found.values() if e.kind == "onnx"]
    assert onnx_entry.fields["module"] == "torch.nn.modules.rnn.GRU" and onnx_entry.fields["opset"] == OPSET
    assert onnx_entry.problem is None and len(onnx_entry.files) == 3
    assert found["tensorrt", damaged.stem].problem == "payload does not match its sha256"
    assert found["tensorrt", plans.entry_key(FIELDS)].fields["gpu"] == FIELDS["gpu"]
    with file_lock(plans.entry_path(tmp_path / "tensorrt", FIELDS).with_suffix(".engine.lock")):
        removed, skipped = catalog.clear(tmp_path, kinds=["tensorrt"])  # one is being built: kept
    assert [e.key for e in skipped] == [plans.entry_key(FIELDS)] and len(removed) == 1
    assert not catalog.clear(tmp_path, older_than_s=3600)[0]  # nothing that old
    removed, _ = catalog.clear(tmp_path)
    assert sorted(e.kind for e in removed) == ["onnx", "tensorrt", "timing"]
    assert catalog.entries(tmp_path) == [] and not list((tmp_path / "onnx").iterdir())
    with pytest.raises(ValueError, match="cache kinds"):
        catalog.entries(tmp_path, kinds=["plans"])


def test_cli_engines_build_list_clear(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from affbatch.cli import app

    monkeypatch.setenv("AFFBATCH_CACHE_DIR", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(app, ["engines", "build", "--runtime", "onnxruntime", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    assert built["device"] == "cpu" and "onnxruntime" in built["runtime"]
    assert sorted(e["fields"]["module"].rsplit(".", 1)[-1] for e in built["new"]) == ["ExpressionPrior", "RetinaFace"]
    again = runner.invoke(app, ["engines", "build", "--runtime", "onnxruntime", "--device", "cpu"])
    assert again.exit_code == 0 and "nothing new" in again.output
    listed = runner.invoke(app, ["engines", "list"])
    assert listed.exit_code == 0 and "2 entries" in listed.output and "RetinaFace" in listed.output
    assert runner.invoke(app, ["engines", "list", "--kind", "plans"]).exit_code == 2
    cleared = runner.invoke(app, ["engines", "clear", "--kind", "onnx", "--json"])
    assert cleared.exit_code == 0 and len(json.loads(cleared.stdout)["removed"]) == 2
    assert "no cached graphs or engines" in runner.invoke(app, ["engines", "list"]).output


@pytest.mark.skipif(not NO_TENSORRT, reason="TensorRT is installed here")
def test_cli_tensorrt_without_tensorrt_is_a_one_line_usage_error(tmp_path):
    from typer.testing import CliRunner

    from affbatch.cli import app
    from tests.support.coded_clips import write_coded_clip

    clip = write_coded_clip(tmp_path / "v.mp4", list(range(5)), Fraction(1, 30))
    runner = CliRunner()
    for command in (
        ["score", str(clip), "--out", str(tmp_path / "o.arrow"), "--runtime", "tensorrt"],
        ["engines", "build", "--runtime", "tensorrt"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "tensorrt: not installed (pip install 'affbatch[gpu]')" in lines[0]
        assert "Traceback" not in result.output


def test_cli_info_says_what_runs_here_and_why_not():
    import json

    from typer.testing import CliRunner

    from affbatch.cli import app

    runner = CliRunner()
    info = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert set(info["runtimes"]) == set(engines.RUNTIMES)
    assert all(set(d) == {"cpu", "cuda"} for d in info["runtimes"].values())
    assert info["runtimes"]["onnxruntime"]["cpu"] is None and info["auto"]["runtime"] is not None
    text = runner.invoke(app, ["info"]).output
    if NO_TENSORRT:
        assert "  tensorrt: not installed (pip install 'affbatch[gpu]')" in text
    if not torch.cuda.is_available():
        assert "  cuda: no device" in text and "auto: onnxruntime on cpu" in text
