"""``affbatch eval``: CCC of traces against Aff-Wild2 labels, printed as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from affbatch.cli.support import CLI
from affbatch.errors import AffbatchError


def eval_command(
    traces: Annotated[Path, typer.Argument(help="Traces written by affbatch score.", show_default=False)],
    labels: Annotated[
        Path, typer.Option("--labels", help="Folder of Aff-Wild2 label files (<video>.txt, <video>_left.txt, ...).")
    ],
    smooth: Annotated[
        float | None,
        typer.Option(
            "--smooth",
            help="Also score the traces smoothed per face track over a window of this many seconds "
            "(centred moving mean; 1 is the labels' own filter span), next to the raw scores.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """CCC of valence and arousal against labels, per video and over all frames (challenge protocol)."""
    from affbatch.evaluation.evaluate import evaluate
    from affbatch.output.smoothing import Smoothing

    try:
        smoothing = Smoothing(smooth) if smooth is not None else None
        result = evaluate(traces, labels, smoothing)
    except AffbatchError as exc:
        raise CLI.fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(render_eval(result))


def render_eval(result) -> str:
    from affbatch.evaluation.evaluate import render_scores

    lines = render_scores(result.videos, result.overall)
    if result.smoothed is not None:
        s = result.smoothed.overall
        window = result.smoothing["window_s"]
        lines += ["", f"smoothed ({result.smoothing['method']}, window {window:g} s):"]
        lines += render_scores(result.smoothed.videos, s)
        lines.append(f"ALL: raw mean CCC {_f(result.overall.mean)}, smoothed {_f(s.mean)}")
    o = result.overall
    if o.missing:
        lines.append(
            f"note: {o.missing} valid labelled frames have no prediction (no face, or traces at another"
            " frame rate); they are not in the CCC"
        )
    if result.unlabelled_videos:
        lines.append(f"videos without labels ({len(result.unlabelled_videos)}): " + ", ".join(result.unlabelled_videos))
    if result.labels_without_traces:
        lines.append(
            f"labels without traces ({len(result.labels_without_traces)}): " + ", ".join(result.labels_without_traces)
        )
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
