"""The ``affbatch`` command line: parses options, builds the library's option objects, calls
the library, and turns expected errors into one-line messages and exit statuses.

Exit statuses: 0 every video scored; 1 some failed (the others are complete in OUT), or eval
could not run; 2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from affbatch.cli_engines import engines_app
from affbatch.cli_support import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CommandLine
from affbatch.errors import AffbatchError

app = typer.Typer(
    name="affbatch",
    help="Per-frame valence/arousal traces for archives of videos (the Aff-Wild2 method).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CLI = CommandLine("affbatch")
_fail = CLI.fail


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    CLI.setup(debug)


@app.command("score")
def score_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Video files and folders (searched recursively).", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Traces file to write (Arrow IPC), e.g. traces.arrow.")],
    fps: Annotated[
        str, typer.Option(help="Output frame rate: 30 (the paper's, as ffmpeg -vf fps=30) or native.")
    ] = "30",
    model: Annotated[
        str,
        typer.Option(help="auto/prior (embedded expression prior), a checkpoint folder (vggface-gru-attn), or none."),
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    runtime: Annotated[str, typer.Option(help="auto, onnxruntime, torch or tensorrt.")] = "auto",
    decoder: Annotated[str, typer.Option(help="auto, pyav or dali.")] = "auto",
    detector: Annotated[
        str, typer.Option(help="auto (packaged RetinaFace MobileNet-0.25) or a RetinaFace ResNet-50 checkpoint file.")
    ] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per batch.")] = 64,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Keep the videos an interrupted run with the same OUT and settings finished."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.")] = False,
) -> None:
    """Score videos into per-frame valence/arousal traces (OUT) and a manifest (OUT's stem + .videos.arrow)."""
    from affbatch.progress import make_progress
    from affbatch.score import ScoreOptions, score

    try:
        options = ScoreOptions(
            out=out,
            fps=fps,
            model=model,
            device=device,
            runtime=runtime,
            decoder=decoder,
            detector=detector,
            batch_size=batch_size,
            resume=resume,
        )
        summary = score(paths, options, make_progress())
    except KeyboardInterrupt:
        typer.echo(f"affbatch: interrupted; finished videos are kept: rerun with --resume to complete {out}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except AffbatchError as exc:
        raise _fail(exc) from None
    except Exception as exc:  # a bug: one line here, the traceback with --debug
        raise CLI.bug(exc) from None
    failed = summary.failed
    ok = len(summary.rows) - len(failed)
    msg = (
        f"{ok} of {len(summary.rows)} videos scored, {summary.frames} frames in {summary.seconds:.1f} s"
        + (f" ({summary.reused} reused)" if summary.reused else "")
        + f": {summary.out} and {summary.manifest}"
    )
    typer.echo(msg, err=True)
    for row in failed:
        typer.echo(f"failed: {row.video}: {row.error}", err=True)
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@app.command("eval")
def eval_command(
    traces: Annotated[Path, typer.Argument(help="Traces written by affbatch score.", show_default=False)],
    labels: Annotated[
        Path, typer.Option("--labels", help="Folder of Aff-Wild2 label files (<video>.txt, <video>_left.txt, ...).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """CCC of valence and arousal against labels, per video and over all frames (challenge protocol)."""
    from affbatch.evaluate import evaluate

    try:
        result = evaluate(traces, labels)
    except AffbatchError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(_render_eval(result))


def _render_eval(result) -> str:
    from affbatch.evaluate import render_scores

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


@app.command("plot")
def plot_command(
    traces: Annotated[Path, typer.Argument(help="Traces written by affbatch score.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Picture to write, e.g. traces.png (svg and pdf work too).")],
    video: Annotated[
        str | None,
        typer.Option("--video", help="The video to draw (default: the first 4 videos that have a face)."),
    ] = None,
) -> None:
    """Valence and arousal over time per face track, and the tracks on the valence-arousal plane."""
    from affbatch.plot import plot_traces

    try:
        summary = plot_traces(traces, out, video)
    except AffbatchError as exc:
        raise _fail(exc) from None
    typer.echo(f"{summary.out}: {', '.join(summary.plotted)}", err=True)
    if summary.left_out and video is None:
        why = f" ({len(summary.without_faces)} without a face)" if summary.without_faces else ""
        typer.echo(
            f"note: {len(summary.videos)} videos in {traces}, {len(summary.left_out)} not drawn{why}; "
            "draw one with --video NAME",
            err=True,
        )


@app.command("info")
def info_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Versions, devices, and the decoders and runtimes available here (and why not)."""
    from affbatch.info import gather, render

    info = gather()
    typer.echo(json.dumps(info, indent=2) if as_json else render(info))


app.add_typer(engines_app, name="engines")


def run() -> None:
    app()


if __name__ == "__main__":
    run()
