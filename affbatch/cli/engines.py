"""``affbatch engines build|list|clear``: the exported graphs and built engines in the cache.

The cache is ``$AFFBATCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/affbatch``, else ``~/.cache/affbatch``:
``onnx/`` (graphs, for ONNX Runtime, OpenVINO and TensorRT), ``tensorrt/`` (engines and timing
caches), ``openvino/`` (compiled models) and ``autotune/`` (what ``auto`` measured fastest on this CPU).
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from affbatch.cli.support import CLI
from affbatch.errors import AffbatchError, UsageError

engines_app = typer.Typer(
    help="The exported graphs and built engines in the cache: build, list, clear.",
    no_args_is_help=True,
)

KIND_HELP = "onnx, tensorrt, timing (TensorRT timing caches), openvino, autotune (auto's measured choices) or all."


def _kinds(kind: str) -> list[str] | None:
    from engines.catalog import KINDS

    if kind == "all":
        return None
    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: choose {', '.join(KINDS)} or all")
    return [kind]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit}"
    return f"{seconds:.0f} s"


def _what(entry) -> str:
    f = entry.fields
    if entry.kind == "onnx":
        if not f:
            return "ONNX graph (no description: exported by an earlier affbatch)"
        inputs = ", ".join(f"{n}{tuple(s)}" for n, (s, _) in f.get("inputs", {}).items())
        module = str(f.get("module", "?")).rsplit(".", 1)[-1]
        return f"{module} ({inputs}) opset {f.get('opset', '?')}, torch {f.get('torch', '?')}"
    if entry.kind == "openvino":
        return (
            f"OpenVINO {f.get('openvino', '?')} {f.get('precision', '?')}, {f.get('threads', '?')} threads, "
            f"on {f.get('cpu', '?')}, onnx {str(f.get('onnx_sha256', '?'))[:12]}"
        )
    if entry.kind == "autotune":
        return f"auto's choice for {f.get('name', '?')}: {' '.join(f.get('choice', ['?']))} ({f.get('cpu', '?')})"
    if entry.kind == "tensorrt":
        maxima = ", ".join(f"{n} max {tuple(s[2])}" for n, s in f.get("profile", {}).items())
        return (
            f"{f.get('precision', '?')} on {f.get('gpu', '?')} (sm {f.get('compute_capability', '?')}), "
            f"TensorRT {f.get('tensorrt', '?')}, {maxima}, onnx {str(f.get('onnx_sha256', '?'))[:12]}"
        )
    return "TensorRT timing cache"


def render(entries) -> str:
    if not entries:
        return "no cached graphs or engines"
    lines = [f"{'kind':9} {'key':12} {'size':>9} {'age':>6}  what"]
    for e in entries:
        problem = f"  [{e.problem}]" if e.problem else ""
        lines.append(f"{e.kind:9} {e.key[:12]:12} {_size(e.bytes):>9} {_age(e.age_s):>6}  {_what(e)}{problem}")
    lines.append(f"{len(entries)} entries, {_size(sum(e.bytes for e in entries))}")
    return "\n".join(lines)


@engines_app.command("build")
def build_command(
    model: Annotated[
        str, typer.Option(help="auto/prior (embedded expression prior) or a checkpoint folder (vggface-gru-attn).")
    ] = "auto",
    detector: Annotated[
        str, typer.Option(help="auto (packaged RetinaFace MobileNet-0.25) or a RetinaFace ResNet-50 checkpoint file.")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    runtime: Annotated[str, typer.Option(help="auto, onnxruntime, openvino (CPU), torch or tensorrt.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto (per model, the fastest measured here), fp32, bf16 or fp16 (CUDA).")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print what was built as JSON.")] = False,
) -> None:
    """Export and compile the models `affbatch score` uses with these options, into the cache."""
    from affbatch.affect.resolve import NO_MODEL
    from affbatch.pipeline import ScoreOptions, Scorer
    from engines.catalog import entries

    try:
        options = ScoreOptions(model=model, detector=detector, device=device, runtime=runtime, precision=precision)
        if model == NO_MODEL:
            raise UsageError("--model none: no models, nothing to build")
        before = {e.path for e in entries()}
        started = time.monotonic()
        scorer = Scorer(options)  # compiles every model a score run with these options uses
    except AffbatchError as exc:
        raise CLI.fail(exc) from None
    new = [e for e in entries() if e.path not in before]
    ident = scorer.analyzer.identity
    seconds = time.monotonic() - started
    if as_json:
        summary = {"runtime": ident.runtime, "precision": ident.precision, "device": ident.device}
        summary["seconds"] = round(seconds, 2)
        typer.echo(json.dumps(summary | {"new": [e.to_json() for e in new]}, indent=2))
        return
    typer.echo(f"models ready in {seconds:.1f} s ({ident.runtime}; {ident.precision}; on {ident.device})")
    if new:
        typer.echo(render(new))
    else:
        typer.echo("nothing new: every graph and engine was already cached (or torch runs the modules as they are)")


@engines_app.command("list")
def list_command(
    kind: Annotated[str, typer.Option(help=KIND_HELP)] = "all",
    verify: Annotated[bool, typer.Option("--verify", help="Also check every file's digest (reads them all).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The cached graphs and engines: kind, key, size, age, what they were built for."""
    from engines.cache import cache_root
    from engines.catalog import entries

    try:
        found = entries(kinds=_kinds(kind), verify=verify)
    except AffbatchError as exc:
        raise CLI.fail(exc) from None
    if as_json:
        typer.echo(json.dumps({"root": str(cache_root()), "entries": [e.to_json() for e in found]}, indent=2))
        return
    typer.echo(f"cache: {cache_root()}")
    typer.echo(render(found))


@engines_app.command("clear")
def clear_command(
    kind: Annotated[str, typer.Option(help=KIND_HELP)] = "all",
    older_than: Annotated[
        float | None, typer.Option("--older-than", help="Only entries older than this many days.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was removed as JSON.")] = False,
) -> None:
    """Remove cached graphs and engines (all, or one kind, or the old ones); they are rebuilt when needed."""
    from engines.catalog import clear

    try:
        if older_than is not None and older_than < 0:
            raise UsageError(f"--older-than {older_than}: must be at least 0 days")
        removed, skipped = clear(kinds=_kinds(kind), older_than_s=None if older_than is None else older_than * 86400)
    except AffbatchError as exc:
        raise CLI.fail(exc) from None
    if as_json:
        out = {"removed": [e.to_json() for e in removed], "skipped": [e.to_json() for e in skipped]}
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"removed {len(removed)} entries, {_size(sum(e.bytes for e in removed))}")
    for e in skipped:
        typer.echo(f"skipped {e.kind} {e.key[:12]}: being built by another process")
