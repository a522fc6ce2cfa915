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
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """CCC of valence and arousal against labels, per video and over all frames (challenge protocol)."""
    from affbatch.evaluation.evaluate import evaluate

    try:
        result = evaluate(traces, labels)
    except AffbatchError as exc:
        raise CLI.fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(render_eval(result))


def render_eval(result) -> str:
    from affbatch.evaluation.evaluate import render_scores

    lines = render_scores(result.videos, result.overall)
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
