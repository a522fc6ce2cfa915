"""What the ``affbatch`` and ``affbatch-train`` command lines share: ``--debug``, exit statuses,
and turning errors into one line on stderr.

An expected error (:class:`~affbatch.errors.AffbatchError`: bad input, a usage mistake) is one
line and exit status 2 (usage) or 1; anything else is a bug: one line too, naming the exception,
with the traceback under ``--debug``.
"""

from __future__ import annotations

import logging
import sys

import typer

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
