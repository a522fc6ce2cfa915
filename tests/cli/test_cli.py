"""The command line: help in step with the README, usage errors, info, progress output."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from fractions import Fraction as F
from pathlib import Path

import pytest
from typer.testing import CliRunner

from affbatch.cli import app
from tests.support.coded_clips import write_coded_clip

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"


def options_of(command: str) -> set[str]:
    from typer.main import get_command

    click_command = get_command(app)
    for word in command.split():  # "engines build": a command of a group
        click_command = click_command.commands[word]
    return {o for p in click_command.params for o in p.opts if o.startswith("--")}


@pytest.mark.parametrize(
    "command", ["score", "eval", "export", "info", "plot", "engines build", "engines list", "engines clear"]
)
def test_readme_usage_lists_every_option(command):
    usage = README.read_text().split("## Usage", 1)[1].split("###", 1)[0]
    line = re.search(rf"affbatch {command} .*?(?=\naffbatch |\n```)", usage, re.S)
    assert line, f"README usage has no line for affbatch {command}"
    documented = set(re.findall(r"--[a-z][a-z-]*", line.group(0)))
    assert documented == options_of(command) - {"--help"}


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("score", "eval", "export", "plot", "info", "engines"):
        assert command in result.output


@pytest.fixture
def clip(tmp_path):
    return write_coded_clip(tmp_path / "v.mp4", list(range(10)), F(1, 30))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fps", "25"], "--fps '25': choose 30 or native"),
        (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["--model", "resnet-lstm"], "--model resnet-lstm: neither a model name"),
        (["--decoder", "gstreamer"], "unknown decoder 'gstreamer'"),
        (["--model", "vggface-gru-attn"], "needs trained weights"),
        (["--runtime", "tensorrt", "--model", "auto"], "tensorrt: "),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--runtime", "tflite"], "--runtime 'tflite'"),
        (["--precision", "int8"], "--precision 'int8'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(clip, tmp_path, args, message):
    result = runner.invoke(app, ["score", "--model", "none", str(clip), "--out", str(tmp_path / "o.arrow"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_out_and_empty_folder_are_usage_errors(tmp_path):
    assert runner.invoke(app, ["score", "--model", "none", str(tmp_path)]).exit_code == 2
    result = runner.invoke(app, ["score", "--model", "none", str(tmp_path), "--out", str(tmp_path / "o.arrow")])
    assert result.exit_code == 2 and "no video files found" in result.output
    result = runner.invoke(
        app, ["score", "--model", "none", str(tmp_path), "--out", str(tmp_path / "nowhere" / "o.arrow")]
    )
    assert result.exit_code == 2


def test_info_json():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["decoders"]["pyav"] is None
    assert info["decoders"]["nvcodec"]  # a reason: GPU only, or not installed
    assert set(info["decoders"]) == {"pyav", "dali", "nvcodec"}
    assert set(info["runtimes"]) == {"onnxruntime", "torch", "tensorrt", "openvino"}
    assert info["cpu"]["cpus"] >= 1 and isinstance(info["cpu"]["features"], list)
    assert info["devices"]["cpu"] is None


def test_piped_progress_is_one_line_per_video(clip, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "affbatch", "score", "--model", "none", str(clip), "--out", str(tmp_path / "o.arrow")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\[1/1\] .*v\.mp4: ok, 10 frames in [\d.]+ s", result.stderr, re.M)
    assert "\x1b[" not in result.stderr  # no terminal control codes in logs


def test_terminal_progress_shows_a_bar_with_rate_and_eta(clip, tmp_path):
    """On a terminal the progress is a live bar (rich) with frames/s and an ETA."""
    videos = tmp_path / "many"
    videos.mkdir()
    for i in range(3):
        write_coded_clip(videos / f"{i}.mkv", list(range(0, 600, 1)), F(1, 60), width=320, height=240)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "affbatch", "score", "--model", "none", str(videos), "--out", str(tmp_path / "o.arrow")],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 0
    text = output.decode(errors="replace")
    assert "frames/s" in text and "ETA" in text
    assert "3 of 3 videos scored" in text


@pytest.mark.parametrize("program", ["affbatch", "affbatch-train"])
def test_a_bug_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, program):
    """An unexpected exception: one line naming it and exit 1; --debug lets it through."""

    def boom(*args, **kwargs):
        raise ValueError("boom")

    if program == "affbatch":
        import affbatch.run

        the_app = app
        monkeypatch.setattr(affbatch.run, "score_run", boom)
        args = ["score", str(tmp_path), "--out", str(tmp_path / "t.arrow")]
    else:
        import training.prepare
        from training.cli import app as the_app

        monkeypatch.setattr(training.prepare, "prepare_videos", boom)
        args = ["prepare", str(tmp_path), "--out", str(tmp_path / "s")]
    result = runner.invoke(the_app, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"{program}: internal error: ValueError: boom (rerun with --debug)"
    # --debug sets the program's module-level policy: restored after the test (other tests share it).
    policy = sys.modules[the_app.registered_callback.callback.__module__].CLI
    monkeypatch.setattr(policy, "debug", False)
    result = runner.invoke(the_app, ["--debug", *args])
    assert isinstance(result.exception, ValueError) and policy.debug
