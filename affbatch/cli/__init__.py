"""The ``affbatch`` command line: parses options, builds the library's option objects, calls
the library, and turns expected errors into one-line messages and exit statuses.

One module per command group (``score``, ``evaluate``, ``export``, ``plot``, ``info``, ``engines``);
``support`` holds what every command shares (``--debug``, exit statuses, error lines),
``progress`` the progress display of ``score``.

Exit statuses: 0 every video scored; 1 some failed (the others are complete in OUT), or eval
could not run; 2 usage error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from affbatch.cli.engines import engines_app
from affbatch.cli.evaluate import eval_command
from affbatch.cli.export import export_command
from affbatch.cli.info import info_command
from affbatch.cli.plot import plot_command
from affbatch.cli.score import score_command
from affbatch.cli.support import CLI, OneLineErrors

app = typer.Typer(
    name="affbatch",
    help="Per-frame valence/arousal traces for archives of videos (the Aff-Wild2 method).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    CLI.setup(debug)


app.command("score")(score_command)
app.command("eval")(eval_command)
app.command("export")(export_command)
app.command("plot")(plot_command)
app.command("info")(info_command)
app.add_typer(engines_app, name="engines")


def run() -> None:
    app()


__all__ = ["app", "run"]
