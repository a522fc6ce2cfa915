"""``affbatch score``: options in, a :func:`affbatch.run.score_run` call, a summary out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from affbatch.cli.support import CLI, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from affbatch.errors import AffbatchError


def score_command(
    paths: Annotated[
        # Not checked here (readable=False): a file that is missing or cannot be read fails alone,
        # as a row of the manifest, as the same file found in a folder does.
        list[Path],
        typer.Argument(help="Video files and folders (searched recursively).", show_default=False, readable=False),
    ],
    out: Annotated[Path, typer.Option("--out", help="Traces file to write (Arrow IPC), e.g. traces.arrow.")],
    fps: Annotated[
        str, typer.Option(help="Output frame rate: 30 (the paper's, as ffmpeg -vf fps=30) or native.")
    ] = "30",
    model: Annotated[
        str,
        typer.Option(
            help="auto/prior (embedded expression prior), a checkpoint folder (vggface-gru-attn), none, or faces."
        ),
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    runtime: Annotated[str, typer.Option(help="auto, onnxruntime, openvino (CPU), torch or tensorrt.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="auto (per model, the fastest measured whose accuracy is tested: bf16 on CPUs with AMX/AVX512-BF16, "
            "else fp32), fp32, bf16 or fp16 (CUDA)."
        ),
    ] = "auto",
    decoder: Annotated[
        str,
        typer.Option(
            help="auto (on a GPU: nvcodec or dali, with pyav for files they cannot take; else pyav), pyav, dali "
            "or nvcodec."
        ),
    ] = "auto",
    detector: Annotated[
        str, typer.Option(help="auto (packaged RetinaFace MobileNet-0.25) or a RetinaFace ResNet-50 checkpoint file.")
    ] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per batch.")] = 64,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes, each with its own models (default: one per visible GPU; 1 on a CPU).",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Score on a Ray cluster: auto (RAY_ADDRESS or a local one) or its ADDRESS. Needs affbatch[ray].",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Keep the videos an interrupted run with the same OUT and settings finished."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.")] = False,
) -> None:
    """Score videos into per-frame valence/arousal traces (OUT) and a manifest (OUT's stem + .videos.arrow)."""
    from affbatch.cli.progress import make_progress
    from affbatch.pipeline import ScoreOptions
    from affbatch.run import score_run

    try:
        options = ScoreOptions(
            fps=fps,
            model=model,
            device=device,
            runtime=runtime,
            precision=precision,
            decoder=decoder,
            detector=detector,
            batch_size=batch_size,
        )
        summary = score_run(paths, out, options, resume=resume, progress=make_progress(), workers=workers, ray=ray)
    except KeyboardInterrupt:
        typer.echo(f"affbatch: interrupted; finished videos are kept: rerun with --resume to complete {out}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except AffbatchError as exc:
        raise CLI.fail(exc) from None
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
