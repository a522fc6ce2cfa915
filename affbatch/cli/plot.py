"""``affbatch plot``: a picture of the traces of one or a few videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from affbatch.cli.support import CLI
from affbatch.errors import AffbatchError


def plot_command(
    traces: Annotated[Path, typer.Argument(help="Traces written by affbatch score.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Picture to write, e.g. traces.png (svg and pdf work too).")],
    video: Annotated[
        str | None,
        typer.Option("--video", help="The video to draw (default: the first 4 videos that have a face)."),
    ] = None,
) -> None:
    """Valence and arousal over time per face track, and the tracks on the valence-arousal plane."""
    from affbatch.output.plot import plot_traces

    try:
        summary = plot_traces(traces, out, video)
    except AffbatchError as exc:
        raise CLI.fail(exc) from None
    typer.echo(f"{summary.out}: {', '.join(summary.plotted)}", err=True)
    if summary.left_out and video is None:
        why = f" ({len(summary.without_faces)} without a face)" if summary.without_faces else ""
        typer.echo(
            f"note: {len(summary.videos)} videos in {traces}, {len(summary.left_out)} not drawn{why}; "
            "draw one with --video NAME",
            err=True,
        )
