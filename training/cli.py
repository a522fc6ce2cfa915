"""The ``affbatch-train`` command line: parses options, builds the library's option objects,
calls the library, and turns expected errors into one-line messages and exit statuses.

Exit statuses (as ``affbatch``): 0 done; 1 some inputs failed (``prepare``: the others are in
the store) or the command could not finish; 2 usage error; 130 interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from affbatch.cli.support import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CommandLine, one_line_errors
from affbatch.errors import AffbatchError, UsageError

app = typer.Typer(
    name="affbatch-train",
    help="Train the Aff-Wild2 paper's affect models: crop stores, fitting, evaluation, export, a demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=one_line_errors("affbatch-train"),
)

CLI = CommandLine("affbatch-train")
_fail = CLI.fail


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False) -> None:
    CLI.setup(debug)


def _report(line: str) -> None:
    typer.echo(line, err=True)


def _guard(call, interrupted: str = ""):
    """Run ``call()``; expected errors -> one line and an exit status; bugs -> one line (--debug: traceback).
    ``interrupted``: what to add to the line Ctrl-C prints (how to go on)."""
    try:
        return call()
    except KeyboardInterrupt:
        typer.echo(f"affbatch-train: interrupted{interrupted}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except AffbatchError as exc:
        raise _fail(exc) from None
    except Exception as exc:
        raise CLI.bug(exc) from None


@app.command("prepare")
def prepare_command(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Videos and folders of videos (not with --cropped-aligned).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="The crop store folder to write.")] = ...,
    labels: Annotated[
        Path | None, typer.Option(help="VA_Estimation_Challenge label folder (<video>.txt, <video>_left.txt, ...).")
    ] = None,
    cropped_aligned: Annotated[
        Path | None, typer.Option("--cropped-aligned", help="Aff-Wild2's cropped_aligned folder (<name>/00001.jpg).")
    ] = None,
    fps: Annotated[str, typer.Option(help="native (what the label files index) or 30.")] = "native",
    detector: Annotated[str, typer.Option(help="auto (packaged RetinaFace) or a RetinaFace checkpoint.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (the detector's).")] = "auto",
    decoder: Annotated[str, typer.Option(help="auto or pyav.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per detector batch.")] = 64,
    split: Annotated[str | None, typer.Option(help="Split name for every track (train, validation, ...).")] = None,
    splits: Annotated[Path | None, typer.Option(help="Split file from `affbatch-train split` (per label).")] = None,
    shard_rows: Annotated[int, typer.Option("--shard-rows", help="Rows per shard file at most.")] = 16384,
    align: Annotated[
        bool, typer.Option("--align", help="Level the eyes in the crops (as crop_faces(align=True)).")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the store in --out.")] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue an interrupted prepare (or add inputs): unchanged inputs are reused."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Build a crop store from Aff-Wild2 videos + labels, or from its cropped_aligned frames."""
    from training.prepare import PrepareOptions, prepare_cropped_aligned, prepare_videos

    def run():
        options = PrepareOptions(
            out=out, labels=labels, fps=fps, detector=detector, device=device, decoder=decoder,
            batch_size=batch_size, split=split, splits=splits, shard_rows=shard_rows, align=align, overwrite=overwrite,
            resume=resume,
        )  # fmt: skip
        if cropped_aligned is not None:
            if paths:
                raise UsageError("give videos or --cropped-aligned DIR, not both")
            return prepare_cropped_aligned(cropped_aligned, options, _report)
        if not paths:
            raise UsageError("give videos (files or folders), or --cropped-aligned DIR")
        return prepare_videos(paths, options, _report)

    summary = _guard(run, f"; finished inputs are kept: rerun with --resume to complete {out}")
    failed = summary.failed
    typer.echo(
        f"{len(summary.videos) - len(failed)} of {len(summary.videos)} inputs prepared: {summary.tracks} tracks, "
        f"{summary.rows} crops in {summary.seconds:.1f} s: {summary.folder}"
        + (f"; {len(summary.skipped)} inputs without a label file skipped" if summary.skipped else ""),
        err=True,
    )
    for v in failed:
        typer.echo(f"failed: {v['video']}: {v['error']}", err=True)
    if as_json:
        info = {
            "store": str(summary.folder),
            "tracks": summary.tracks,
            "rows": summary.rows,
            "seconds": summary.seconds,
        }
        typer.echo(json.dumps({**info, "videos": summary.videos, "skipped": summary.skipped}, indent=2))
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@app.command("fit")
def fit_command(
    train: Annotated[Path, typer.Option("--train", help="Crop store to train on.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: best/, train-state, log.csv.")],
    val: Annotated[Path | None, typer.Option("--val", help="Crop store to validate on (default: --train's).")] = None,
    splits: Annotated[Path | None, typer.Option(help="Split file (affbatch-train split) choosing the tracks.")] = None,
    train_split: Annotated[str, typer.Option("--train-split", help="Split trained on.")] = "train",
    val_split: Annotated[str, typer.Option("--val-split", help="Split validated on.")] = "validation",
    strategy: Annotated[
        str, typer.Option(help="i (CNN frozen), ii (all, random RNN), iii (all, from --init-from).")
    ] = "i",
    arch: Annotated[str, typer.Option(help="Architecture (vggface-gru-attn or a zoo name).")] = "vggface-gru-attn",
    init_from: Annotated[Path | None, typer.Option("--init-from", help="Checkpoint to start from.")] = None,
    backbone: Annotated[Path | None, typer.Option(help="Pre-trained CNN weights file (see --backbone-kind).")] = None,
    backbone_kind: Annotated[str, typer.Option("--backbone-kind", help="vggface, vggface2-resnet50, ...")] = "vggface",
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 20,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps in all.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and the sampler.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16/fp16 autocast on CUDA), fp32, bf16, fp16.")] = "auto",
    feature_cache: Annotated[
        bool, typer.Option("--feature-cache/--no-feature-cache", help="Strategy i: cache the frozen CNN's features.")
    ] = True,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Initial learning rate [default: the paper's 1e-3]", show_default=False)
    ] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Steps between saved states.")] = 200,
    log_every: Annotated[int, typer.Option("--log-every", help="Steps between progress lines.")] = 50,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its saved state.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Train a model with the paper's loss, optimiser, schedule and strategies; keep the best checkpoint."""
    from training.loop import FitOptions, fit

    def run():
        options = FitOptions(
            train=train, out=out, val=val, splits=splits, train_split=train_split, val_split=val_split,
            strategy=strategy, arch=arch, init_from=init_from, backbone=backbone, backbone_kind=backbone_kind,
            epochs=epochs, max_steps=max_steps, seed=seed, device=device, precision=precision,
            feature_cache=feature_cache, checkpoint_every=checkpoint_every, log_every=log_every, resume=resume,
            **({} if lr is None else {"learning_rate": lr}),  # None: FitOptions' default, the paper's rate
        )  # fmt: skip
        return fit(options, _report)

    result = _guard(run, f"; rerun with --resume to go on from the last saved state in {out} (--checkpoint-every)")
    v = result.best_validation
    best = f"best checkpoint {result.best}" if result.best else "no checkpoint"
    if v and v.get("mean") is not None:
        best += f" (validation CCC valence {v['valence']:.3f}, arousal {v['arousal']:.3f}, mean {v['mean']:.3f})"
    typer.echo(f"{result.steps} steps, {result.epochs} epochs: {best}", err=True)
    if as_json:
        info = {"out": str(result.out), "best": str(result.best) if result.best else None, "steps": result.steps}
        typer.echo(json.dumps({**info, "validation": v, "curve": result.curve}, indent=2))


@app.command("evaluate")
def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (or a run folder: its best/).")],
    store: Annotated[Path, typer.Option("--store", help="Crop store with labels.")],
    split: Annotated[str | None, typer.Option(help="Only this split's tracks (default: all labelled).")] = None,
    splits: Annotated[Path | None, typer.Option(help="Split file choosing the tracks (with --split).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """CCC of a checkpoint on a store's labelled tracks, with the challenges' protocol."""

    def run():
        from affbatch.models.checkpoint import load_checkpoint
        from training.loop import resolve_device_option
        from training.store import CropStore
        from training.validate import validate

        source = checkpoint / "best" if (checkpoint / "best" / "config.json").is_file() else checkpoint
        resolved = resolve_device_option(device)
        model, _ = load_checkpoint(source, resolved)
        crop_store = CropStore(store)
        if splits is not None:
            from training.splits import read_split

            of = read_split(splits)
            tracks = [t for t in crop_store.select() if of.get(t.label or "") == (split or "validation")]
        else:
            tracks = crop_store.select(split)
        if not tracks:
            raise UsageError(f"{store}: no labelled tracks" + (f" in split {split!r}" if split else ""))
        return validate(model, crop_store, tracks, resolved)

    result = _guard(run)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(render_scores(result))


def render_scores(result) -> str:
    from affbatch.evaluation.evaluate import render_scores as table

    return "\n".join(table(result.labels, result.overall))


@app.command("export")
def export_command(
    paths: Annotated[
        list[Path],
        typer.Argument(help="SOURCE DIR (a run or checkpoint folder, then where to write), or DIR with --init."),
    ],
    init: Annotated[
        str | None, typer.Option("--init", help="Write an UNTRAINED initialisation of this architecture.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of --init's random weights.")] = 0,
) -> None:
    """Write a checkpoint folder that `affbatch score --model` takes (or an untrained init, labelled so)."""
    from training.export import export_checkpoint, export_init

    def run():
        if init is not None:
            if len(paths) != 1:
                raise UsageError("export --init ARCH DIR: give one folder to write")
            return export_init(init, paths[0], seed)
        if len(paths) != 2:
            raise UsageError("export SOURCE DIR: give the run (or checkpoint) folder and the folder to write")
        return export_checkpoint(paths[0], paths[1])

    checkpoint = _guard(run)
    kind = "trained" if checkpoint.trained else "UNTRAINED init"
    typer.echo(
        f"{checkpoint.architecture} ({kind}) written to {checkpoint.path}; "
        f"use: affbatch score --model {checkpoint.path}",
        err=True,
    )


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the drawn data set, the run and the exported model.")],
    seed: Annotated[int, typer.Option(help="Seed of the data set and the training.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Epochs of strategy i (default: the demo's).")] = None,
    finetune_steps: Annotated[
        int, typer.Option("--finetune-steps", help="Steps of strategy iii after i (slow on CPU).")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Draw faces with known valence/arousal, fit vggface-gru-attn on them, evaluate and export."""
    from training.demo import DemoOptions, run_demo

    def run():
        options = DemoOptions(out=out, seed=seed, finetune_steps=finetune_steps, device=device)
        if epochs is not None:
            options.epochs = epochs
        return run_demo(options, _report)

    _guard(run)


try:  # the data commands (aggregate, split, recola), when their module is installed
    from training import cli_data
except ImportError:  # pragma: no cover
    cli_data = None
if cli_data is not None:
    cli_data.register(app, _fail)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
