"""What the ``affbatch`` and ``affbatch-train`` command lines share: ``--debug``, exit statuses,
and turning errors into one line on stderr.

An expected error (:class:`~affbatch.errors.AffbatchError`: bad input, a usage mistake) is one
line and exit status 2 (usage) or 1; anything else is a bug: one line too, naming the exception,
with the traceback under ``--debug``. Mistakes click finds while parsing (a missing option, a
value of the wrong type) are one line too (:class:`OneLineErrors`), not typer's boxed panel.
"""

from __future__ import annotations

import logging
import sys

import typer
from typer.core import TyperGroup

from affbatch.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: 128 + SIGINT, as shells report a program stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


class CommandLine:
    """One program's error policy: ``setup(debug)`` from its callback, then ``fail``/``bug``."""

    def __init__(self, program: str):
        self.program = program
        self.debug = False

    def setup(self, debug: bool) -> None:
        self.debug = debug
        logging.basicConfig(
            level=logging.DEBUG if debug else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )

    def fail(self, exc: Exception) -> typer.Exit:
        """An expected error: its one line, and the exit to raise (``--debug``: re-raised)."""
        if self.debug:
            raise exc
        typer.echo(f"{self.program}: error: {exc}", err=True)
        return typer.Exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED)

    def bug(self, exc: Exception) -> typer.Exit:
        """An unexpected exception: one line naming it, and exit 1 (``--debug``: re-raised)."""
        if self.debug:
            raise exc
        typer.echo(f"{self.program}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True)
        return typer.Exit(EXIT_FAILED)


#: The ``affbatch`` program's error policy (``affbatch-train`` has its own).
CLI = CommandLine("affbatch")


class OneLineErrors(TyperGroup):
    """Typer's command group, with the errors click raises while parsing the command line (a
    missing argument, an unknown option, a value of the wrong type) written as one line,
    ``PROGRAM: error: ...``, exit status 2, as every other usage error is."""

    program = "affbatch"

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo(f"{self.program}: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            # click's ClickException family (typer vendors click, under a private name): a
            # message and an exit status; UsageError's carry the context of the command.
            if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments at all: the help
                typer.echo(exc.format_message(), err=True)
                sys.exit(exc.exit_code)
            line = " ".join(exc.format_message().split())
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            typer.echo(f"{self.program}: error: {line}{hint}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(status if isinstance(status, int) else EXIT_OK)


def one_line_errors(program: str) -> type[OneLineErrors]:
    """:class:`OneLineErrors` for another program (``affbatch-train``)."""
    return type(f"OneLineErrors_{program.replace('-', '_')}", (OneLineErrors,), {"program": program})
