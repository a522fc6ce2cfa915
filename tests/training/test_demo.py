"""``affbatch-train``: the CLI in-process (typer's runner), export, and the demo (a smoke run; the
full demo is ``slow``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from affbatch.models.checkpoint import load_checkpoint
from training.cli import app
from training.demo import DemoOptions, _video_plan, run_demo
from training.synthetic_faces import draw_face, draw_video, make_identities

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("prepare", "fit", "evaluate", "export", "demo"):
        assert command in result.output
    if "aggregate" not in result.output:  # the data commands come from training.cli_data
        pytest.importorskip("training.cli_data")
        pytest.fail("training.cli_data exists but its commands are not registered")


def test_readme_options_exist():
    """Every option the README's synopsis of prepare/fit/evaluate/export/demo shows is real."""
    import re
    from pathlib import Path

    import typer

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    synopsis = readme.split("### `prepare`, `fit`, `evaluate`, `export`", 1)[1].split("```", 2)[1]
    commands = typer.main.get_command(app).commands
    current = None
    for line in synopsis.splitlines():
        words = line.split()
        if words[:1] == ["affbatch-train"]:
            current = commands[words[1]]
        if current is None:
            continue
        options = {o for p in current.params for o in p.opts + p.secondary_opts}
        for option in re.findall(r"--[a-z][a-z-]*", line.split("#")[0]):
            assert option in options, f"README: affbatch-train {current.name} {option}"


def test_cli_defaults_are_the_libraries():
    import dataclasses

    import typer

    from training.loop import FitOptions
    from training.prepare import PrepareOptions

    commands = typer.main.get_command(app).commands
    for command, options in (("fit", FitOptions), ("prepare", PrepareOptions)):
        defaults = {f.name: f.default for f in dataclasses.fields(options)}
        defaults["lr"] = defaults.get("learning_rate")
        for param in commands[command].params:
            if param.name in defaults and param.default is not None and not callable(param.default):
                assert param.default == defaults[param.name], f"{command} --{param.name}"


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["prepare", "--out", "{tmp}/s"], 2, "give videos"),
        (["prepare", "x.mp4", "--out", "{tmp}/s", "--fps", "25"], 2, "--fps '25'"),
        (["fit", "--train", "{tmp}/nostore", "--out", "{tmp}/run"], 1, "no such crop store"),
        (["fit", "--train", "{tmp}", "--out", "{tmp}/run", "--strategy", "iv"], 2, "--strategy 'iv'"),
        (["fit", "--train", "{tmp}", "--out", "{tmp}/r", "--device", "cpu", "--precision", "fp16"], 2, "CUDA only"),
        (["export", "--init", "no-such-arch", "{tmp}/m"], 2, "--init 'no-such-arch'"),
        (["export", "{tmp}/nothing", "{tmp}/m"], 2, "no such checkpoint folder"),
    ],
)
def test_errors_are_one_line_with_a_status(tmp_path, args, status, message):
    result = invoke(*(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == status, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("affbatch-train: error:") and message in lines[-1]
    assert "Traceback" not in result.output


def test_export_init_is_labelled_untrained(tmp_path):
    result = invoke("export", "--init", "vggface-gru-attn", tmp_path / "init")
    assert result.exit_code == 0, result.output
    model, checkpoint = load_checkpoint(tmp_path / "init")
    assert not checkpoint.trained and checkpoint.config["weights"] == "untrained-init"
    assert "not trained" in checkpoint.config["init"]["note"]


def test_drawn_faces_follow_their_labels():
    """Valence moves the mouth (and not the eyes), arousal the eyes; videos carry their labels."""
    identity = make_identities(3, 0)[1]
    background = np.full((144, 144, 3), 100, np.float32)

    def face(valence, arousal):
        return draw_face(identity, valence, arousal, (72, 72), 1.0, 0.0, background)

    b = identity.half_width * identity.aspect
    eyes = slice(int(72 - 0.35 * b), int(72 + 0.05 * b))
    mouth = slice(int(72 + 0.25 * b), int(72 + 0.75 * b))
    by_valence = np.abs(face(1, 0) - face(-1, 0)).mean(axis=(1, 2))
    by_arousal = np.abs(face(0, 1) - face(0, -1)).mean(axis=(1, 2))
    assert by_valence[mouth].mean() > 10 and by_arousal[eyes].mean() > 10
    assert by_valence[eyes].mean() < by_valence[mouth].mean() / 2
    assert np.array_equal(face(0.3, -0.2), face(0.3, -0.2))
    video = draw_video(identity, 60, np.random.default_rng(0))
    assert video.frames.shape == (60, 144, 144, 3) and video.labels.shape == (60, 2)
    assert np.abs(video.labels).max() <= 1 and np.ptp(video.labels[:, 0]) > 0.2
    assert (video.boxes[:, 2] > video.boxes[:, 0]).all()
    plan = _video_plan(DemoOptions("x"))
    assert {split for _, split, _, _ in plan} == {"train", "validation", "test"}
    assert len({i for _, _, i, _ in plan}) == len({n for n, _, _, _ in plan}) == len(plan)  # one identity each


def test_demo_smoke(tmp_path):
    """The whole demo on a handful of frames: store, strategy i with cached features, export."""
    lines = []
    options = DemoOptions(
        tmp_path / "demo",
        train_videos=4,
        val_videos=1,
        test_videos=1,
        frames=80,
        eval_frames=80,
        epochs=2,
        calibration_frames=16,
    )
    result = run_demo(options, lines.append)
    model, checkpoint = load_checkpoint(result.model)
    assert checkpoint.trained and checkpoint.architecture == "vggface-gru-attn"
    assert checkpoint.config["training"]["strategy"] == "i"
    assert len(result.curve) == 2 and all("mean" in p for p in result.curve)
    assert any("validation CCC" in line for line in lines) and lines[-1].startswith("demo: ")
    assert result.test["frames"] == 80 and result.test["valence"] is not None
    # The store is a regular crop store: evaluate reads it with the exported model.
    out = invoke("evaluate", result.model, "--store", tmp_path / "demo" / "store", "--split", "validation", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["valence"] == pytest.approx(result.validation["valence"], abs=1e-4)


@pytest.mark.slow
def test_full_demo_learns(tmp_path, request):
    """The demo as `affbatch-train demo` runs it: well above 0.8 CCC on held-out videos."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the full demo takes 5 to 10 minutes on 2 cores: run with -m slow")
    result = invoke("demo", "--out", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    _, checkpoint = load_checkpoint(tmp_path / "demo" / "model")
    validation = checkpoint.config["training"]["validation"]
    assert validation["valence"] > 0.8 and validation["arousal"] > 0.8, validation
    test = result.output.splitlines()[-1]
    assert test.startswith("demo: CCC on the 4 test videos"), test
