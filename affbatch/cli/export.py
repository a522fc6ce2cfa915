"""``affbatch export``: traces to Aff-Wild2 challenge files, Parquet or CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from affbatch.cli.support import CLI, EXIT_FAILED, EXIT_OK
from affbatch.errors import AffbatchError


def export_command(
    traces: Annotated[Path, typer.Argument(help="Traces written by affbatch score.", show_default=False)],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="abaw: one Aff-Wild2 challenge file per video and person in the folder OUT; "
            "parquet or csv: the traces in OUT and the manifest next to it.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder (abaw) or file (parquet, csv) to write.")],
    fill: Annotated[
        str,
        typer.Option(
            "--fill",
            help="abaw: frames without the person's face get the nearest frame's value within the track, "
            "or linear (interpolated), hold (the last one), zero.",
        ),
    ] = "nearest",
    smooth: Annotated[
        float | None,
        typer.Option(
            "--smooth",
            help="Smooth valence/arousal per face track over a window of this many seconds first "
            "(centred moving mean; recorded in the metadata written).",
            show_default=False,
        ),
    ] = None,
    videos: Annotated[
        Path | None,
        typer.Option(
            "--videos",
            help="abaw from traces at 30 fps: the folder the videos were scored from, to count their source "
            "frames exactly (default: the names in the traces, from here; else estimated, and said so).",
            show_default=False,
        ),
    ] = None,
    names: Annotated[
        Path | None,
        typer.Option(
            "--names",
            help="abaw: write exactly these files (a list of names such as video_left, one a line, as the "
            "challenge gives them, or a folder of label files), each matched to a track as eval matches it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write traces as Aff-Wild2 challenge files (abaw), Parquet or CSV."""
    from affbatch.output.export import ExportOptions, export

    try:
        options = ExportOptions(to=to, out=out, fill=fill, smooth=smooth, videos=videos, names=names)
        summary = export(traces, options)
    except AffbatchError as exc:
        raise CLI.fail(exc) from None
    except Exception as exc:  # a bug: one line here, the traceback with --debug
        raise CLI.bug(exc) from None
    for line in summary.notes:
        typer.echo(f"note: {line}", err=True)
    for video, why in summary.failed:
        typer.echo(f"failed: {video}: {why}", err=True)
    if summary.abaw is not None:
        files = summary.abaw.files
        people = sum(f.person is not None for f in files)
        typer.echo(
            f"{len(files)} files ({people} of two-person videos, _left/_right), "
            f"{sum(f.lines for f in files)} lines, --fill {options.fill}: {options.out}",
            err=True,
        )
    else:
        typer.echo(f"wrote {', '.join(str(p) for p in summary.written)}", err=True)
    raise typer.Exit(EXIT_FAILED if summary.failed else EXIT_OK)
