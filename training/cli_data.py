"""The data commands of ``affbatch-train``: ``aggregate``, ``split`` and ``recola``.

They only parse options, build the library's option objects and print results; the work is in
:mod:`training.annotations`, :mod:`training.splits` and :mod:`training.recola`.
``register(app)`` adds them to the ``affbatch-train`` typer app.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import typer

from affbatch.cli.support import CommandLine
from affbatch.errors import AffbatchError, UsageError
from training.annotations import DEFAULT_FILTER_SIZE

#: Turns an expected error into a message and an exit; ``register(app, fail=...)`` replaces it
#: (the app's ``--debug`` can then re-raise instead).
_fail: Callable[[Exception], typer.Exit] = CommandLine("affbatch-train").fail


def _number(x: float) -> str:
    return "     -" if x != x else f"{x:6.3f}"  # x != x: NaN, an undefined correlation


def render_maic(result) -> str:
    lines = [
        f"MAIC over {result.frames} frames of {len(result.written)} label files,"
        f" {len(result.annotators)} annotators ({', '.join(result.annotators)})",
        f"{'median filter':16} {'valence':>7} {'arousal':>7}",
    ]
    for row in result.table:
        name = "none (mean)" if row.filter_size == 1 else f"{row.filter_size} frames"
        chosen = "  <- labels" if row.filter_size == result.filter_size else ""
        lines.append(f"{name:16} {_number(row.valence.maic):>7} {_number(row.arousal.maic):>7}{chosen}")
    return "\n".join(lines)


def aggregate(
    raw: Annotated[
        Path,
        typer.Argument(help="Raw traces: RAW/<annotator>/<label name>.txt (Aff-Wild2 format).", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the final label files (<label name>.txt).")],
    filter_size: Annotated[
        int, typer.Option("--filter", help="Median filter size in frames for the labels (1: none; paper: 5, 15, 30).")
    ] = DEFAULT_FILTER_SIZE,
    min_annotators: Annotated[
        int | None,
        typer.Option("--min-annotators", help="Frames valid with at least N annotators (default: all of the video)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the MAIC table and counts as JSON.")] = False,
) -> None:
    """Median-filter each annotator's traces, average them into labels, and print MAIC per filter size."""
    from training.annotations import AggregateOptions
    from training.annotations import aggregate as run_aggregate

    try:
        result = run_aggregate(
            AggregateOptions(raw=raw, out=out, filter_size=filter_size, min_annotators=min_annotators)
        )
    except AffbatchError as exc:
        raise _fail(exc) from None
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(render_maic(result))
    typer.echo(f"{len(result.written)} label files, {result.valid_frames} of {result.frames} frames valid: {out}")


def split(
    mapping: Annotated[Path, typer.Argument(help="Subject mapping CSV: video,subject[,person].", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The split to write: a .csv or .json file.")],
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Folder of label files, to count frames per split.")
    ] = None,
    proportions: Annotated[
        str, typer.Option(help="Train,validation,test shares (default: the paper's 350,70,138 videos).")
    ] = "350,70,138",
    seed: Annotated[int, typer.Option(help="Seed of the (deterministic) order of subject groups.")] = 0,
    by: Annotated[str, typer.Option(help="Balance the proportions of: videos or frames (needs --labels).")] = "videos",
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Subject-independent train/validation/test split; both people of a video stay together."""
    from training.splits import SPLITS, SplitOptions
    from training.splits import split as run_split

    try:
        options = SplitOptions(mapping=mapping, out=out, labels=labels, proportions=proportions, seed=seed, by=by)
        result = run_split(options)
    except AffbatchError as exc:
        raise _fail(exc) from None
    if result.missing_labels:
        shown = ", ".join(result.missing_labels[:5]) + (", ..." if len(result.missing_labels) > 5 else "")
        typer.echo(f"warning: {len(result.missing_labels)} mapped label names have no label file: {shown}", err=True)
    if result.unmapped_labels:
        shown = ", ".join(result.unmapped_labels[:5]) + (", ..." if len(result.unmapped_labels) > 5 else "")
        typer.echo(f"warning: {len(result.unmapped_labels)} label files are not in the mapping: {shown}", err=True)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    lines = [f"{'split':11} {'videos':>7} {'labels':>7} {'subjects':>8} {'frames':>9} {'valid':>9}"]
    for s in SPLITS:
        c = result.counts[s]
        frames = "-" if c.frames is None else str(c.frames)
        valid = "-" if c.valid_frames is None else str(c.valid_frames)
        lines.append(f"{s:11} {c.videos:7d} {c.labels:7d} {c.subjects:8d} {frames:>9} {valid:>9}")
    typer.echo("\n".join(lines))
    typer.echo(f"{result.groups} subject groups split into {out}")


def recola(
    gold: Annotated[
        Path,
        typer.Argument(
            help="AVEC gold standard: GOLD/arousal/<name>.arff, GOLD/valence/<name>.arff.", show_default=False
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the label files (<name>.txt).")],
    fps: Annotated[str, typer.Option(help="Frame rate of the videos the labels index, e.g. 25, 30 or 30000/1001.")],
    frames: Annotated[
        int | None, typer.Option(help="Labels per recording (default: the rated span).", show_default=False)
    ] = None,
    column: Annotated[
        str | None, typer.Option(help="Rating attribute when a file has several (e.g. FM1).", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """RECOLA gold-standard ratings (40 ms) interpolated to video frames, as Aff-Wild2 label files."""
    from training.recola import RecolaOptions, convert

    try:
        try:
            rate = Fraction(fps)
        except (ValueError, ZeroDivisionError):
            raise UsageError(f"--fps {fps!r}: expected a positive frame rate, e.g. 25, 30 or 30000/1001") from None
        result = convert(RecolaOptions(gold=gold, out=out, fps=rate, frames=frames, column=column))
    except AffbatchError as exc:
        raise _fail(exc) from None
    if result.clipped:
        typer.echo(f"warning: {result.clipped} ratings outside [-1, 1] were clipped to it", err=True)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(f"{len(result.written)} label files, {result.valid_frames} of {result.frames} frames valid: {out}")


def register(app: typer.Typer, fail: Callable[[Exception], typer.Exit] | None = None) -> None:
    """Add ``aggregate``, ``split`` and ``recola`` to ``app``.

    ``fail`` turns an :class:`AffbatchError` into a ``typer.Exit`` (printing the message); the
    default prints ``affbatch-train: error: ...`` and exits 2 for usage errors, 1 otherwise.
    """
    global _fail
    if fail is not None:
        _fail = fail
    app.command("aggregate")(aggregate)
    app.command("split")(split)
    app.command("recola")(recola)
