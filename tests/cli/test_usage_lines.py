"""Every usage error is one line, ``affbatch: error: ...``, exit status 2: the mistakes click
finds while parsing (a missing option, a value of the wrong type, an unknown command or option)
as much as the ones affbatch finds; never typer's boxed panel."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from affbatch.cli import app

PARSE_ERRORS = {
    "missing --out": (["score", "v.mp4"], "Missing option '--out'"),
    "no path": (["score", "--out", "o.arrow"], "Missing argument"),
    "not an integer": (["score", "v.mp4", "--out", "o.arrow", "--batch-size", "x"], "'--batch-size'"),
    "option without value": (["score", "v.mp4", "--out"], "'--out' requires an argument"),
    "unknown option": (["score", "v.mp4", "--out", "o.arrow", "--fast"], "No such option: --fast"),
    "unknown command": (["scroe"], "No such command 'scroe'"),
    "engines subcommand": (["engines", "list", "--kind"], "'--kind' requires an argument"),
}


def _check(status: int, output: str, words: str) -> None:
    assert status == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("affbatch: error: ") and words in lines[0], lines[0]
    assert not set("╭╰│─") & set(output)


@pytest.mark.parametrize("case", PARSE_ERRORS)
def test_parse_errors_are_one_line(case):
    args, words = PARSE_ERRORS[case]
    result = CliRunner().invoke(app, args)
    _check(result.exit_code, result.output, words)


def test_the_installed_command_writes_one_line_too(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "affbatch", "score", "v.mp4"], capture_output=True, text=True, cwd=tmp_path
    )
    _check(done.returncode, done.stdout + done.stderr, "Missing option '--out'")
    assert "(see " in done.stderr and "score --help)" in done.stderr


def test_affbatch_train_parse_errors_are_one_line_too():
    from training.cli import app as train_app

    result = CliRunner().invoke(train_app, ["export"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("affbatch-train: error: Missing argument"), result.output
