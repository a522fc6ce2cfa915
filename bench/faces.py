"""``affbatch score`` end to end on face clips, next to the naive baseline and the compute floor.

Clips: 360p, 720p and 1080p, 30 fps, with one and with two real faces (``media.face_clip``).
For each clip, decoder, batch size and runtime: ``affbatch score`` with ``--model none``
(probe + decode + write: what decoding alone costs), with the embedded expression prior, and
with ``vggface-gru-attn`` (an untrained init: the weights do not change the work). Each model is
one ``score`` call over every clip, each clip as a warm-up file (its first third) then ``repeats``
timed copies, so models load once, as in real use; a copy's rate is its frames over the time
between its finish and the previous file's (decoding runs ahead across videos, so the manifest's
own ``seconds`` overlap), and its memory the peak RSS over that time.

The naive baseline (``bench.naive``) scores the same clips with the same models one frame and one
face at a time, at full resolution, with nothing overlapped; its ratio to the pipeline is what
the pipeline's engineering buys. The floor (``bench.roofline``): the machine's peak fp32 rate
over the FLOPs the pipeline needs per frame (detector at its 640-pixel input + the faces found x
the model per face); each rate is also given as a fraction of it.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch

from affbatch.output.traces import read_table
from affbatch.pipeline import ScoreOptions
from affbatch.run import score_run
from bench import roofline
from bench.measure import PeakMemory, Stopwatch, rates_summary, summarise
from bench.media import face_clip
from bench.models import RESOLUTIONS, floor_note
from bench.report import markdown_table, memory, number, percent, rate

CLIPS = [(res, faces) for res in RESOLUTIONS for faces in (1, 2)]
MODELS = ("prior", "vggface-gru-attn")


def untrained_checkpoint(folder: Path) -> Path:
    from affbatch.models.checkpoint import save_checkpoint
    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    torch.manual_seed(0)
    save_checkpoint(VGGFaceGRUAttention(), folder, trained=False)
    return folder


def clip_name(res: str, faces: int) -> str:
    return f"{res} {faces} face{'s' if faces > 1 else ''}"


def model_flops(checkpoint: Path) -> dict:
    """FLOPs per frame or face of every model, counted (``bench.roofline``)."""
    from affbatch.faces.detector import MAX_SIDE, FaceDetector
    from affbatch.models.checkpoint import resolve_affect_model
    from affbatch.models.expression_prior import load_expression_prior
    from affbatch.models.vggface_gru_attn import ATTENTION_LENGTH, FC6_UNITS, SEQUENCE_LENGTH

    detector = FaceDetector.default(runtime="torch", device="cpu").model
    module, _ = resolve_affect_model(str(checkpoint), "cpu")
    out = {"detector": {}, "detector_full": {}}
    for res, (w, h) in RESOLUTIONS.items():
        out["detector"][res] = roofline.detector_flops(detector, h, w, MAX_SIDE)
        out["detector_full"][res] = roofline.detector_flops(detector, h, w, max(w, h))
    out["prior"] = roofline.crop_flops(load_expression_prior())
    out["vggface-gru-attn"] = roofline.crop_flops(module.cnn) + roofline.temporal_flops_per_frame(
        module.temporal, FC6_UNITS, SEQUENCE_LENGTH, ATTENTION_LENGTH
    )
    return out


def faces_per_frame(table, videos: list[str]) -> float:
    """Face rows per output frame over ``videos`` of a traces table."""
    table = table.filter(pc.is_in(table["video"], value_set=pa.array(videos)))
    frames = pc.sum(table.group_by("video").aggregate([("frame", "count_distinct")])["frame_count_distinct"]).as_py()
    return (len(table) - table["track"].null_count) / frames


def pipeline_rates(
    clips: dict[str, list[Path]],
    out: Path,
    model: str,
    runtime: str,
    decoder: str,
    batch: int,
    device: str,
    precision: str = "auto",
) -> dict[str, dict]:
    """One ``affbatch score`` call over every clip's files (a warm-up one, then the timed copies):
    for each clip, the rates of its timed copies, their peak memory and faces per frame."""
    watch = Stopwatch()
    files = [f for copies in clips.values() for f in copies]
    options = ScoreOptions(
        model=model, runtime=runtime, decoder=decoder, batch_size=batch, device=device, precision=precision
    )
    summary = score_run(files, out, options, progress=watch)
    if summary.failed:
        raise RuntimeError(f"bench clips failed: {summary.failed}")
    videos = watch.per_video()
    table = read_table(out) if model != "none" else None
    results = {}
    for clip, copies in clips.items():
        timed = [videos[str(f)] for f in copies[1:]]
        result = rates_summary([v["fps"] for v in timed], timed[0]["frames"])
        result["memory"] = max((v["memory"] for v in timed), key=lambda m: m["rss_peak_mib"])
        if table is not None:
            result["faces_per_frame"] = faces_per_frame(table, [str(f) for f in copies[1:]])
            result["runtime_used"] = summary.metadata.get("runtime")
            result["precision_used"] = summary.metadata.get("precision")
        results[clip] = result
    return results


def naive_scorer(model: str, checkpoint: Path, runtime: str, device: str, precision: str = "auto"):
    """The naive baseline with the pipeline's models in the same runtime and precision (the
    detector's as ``score`` places it)."""
    import engines
    from affbatch.affect.runners import AffectIdentity, FrameAffect, SequenceAffect
    from affbatch.models.checkpoint import resolve_affect_model
    from affbatch.models.expression_prior import load_expression_prior
    from affbatch.models.vggface_gru_attn import ATTENTION_LENGTH, SEQUENCE_LENGTH
    from bench.naive import NaiveScorer

    placement = engines.resolve(runtime, device, precision)
    where = (placement.runtime, placement.device, placement.precision)
    identity = AffectIdentity(model, None, "")
    if model == "prior":
        affect = FrameAffect(load_expression_prior(), identity, *where)
    else:
        module, _ = resolve_affect_model(str(checkpoint), "cpu")
        affect = SequenceAffect(module, identity, SEQUENCE_LENGTH, ATTENTION_LENGTH, *where)
    return NaiveScorer(affect, *where)


def naive_rates(scorer, clip: Path, repeats: int, frames: int | None) -> dict:
    """The naive baseline on ``clip``: one warm-up frame, then ``repeats`` timed runs over
    ``frames`` frames (its models are loaded already, as ``score``'s are after its warm-up)."""
    runs = []
    with PeakMemory() as mem:
        scorer(clip, limit=1)  # warm-up: sessions at this frame size, the page cache
        for _ in range(repeats):
            runs.append(scorer(clip, limit=frames))
    return {
        **summarise(runs[0]["frames"], [r["seconds"] for r in runs]),
        "faces_per_frame": runs[0]["faces"] / max(runs[0]["frames"], 1),
        "memory": mem.result(),
    }


def run(
    workdir: Path,
    seconds: float,
    repeats: int,
    device: str,
    gflops_s: float,
    runtimes: list[str],
    batch_sizes: list[int],
    decoders: list[str],
    naive_runtime: str,
    naive_frames: int | None = None,
    precisions: list[str] | None = None,
) -> dict:
    """Everything the module docstring says; ``naive_frames`` caps the frames of a naive run;
    ``precisions``: ``score --precision`` values, each with every runtime (default: auto); with
    more than one, a row's runtime reads ``<runtime> <precision>``."""
    precisions = precisions or ["auto"]

    def label(runtime: str, precision: str) -> str:
        return runtime if len(precisions) == 1 else f"{runtime} {precision}"

    checkpoint = untrained_checkpoint(workdir / "vggface-gru-attn-init")
    flops = model_flops(checkpoint)
    model_args = {"prior": "auto", "vggface-gru-attn": str(checkpoint)}
    clips: dict[str, list[Path]] = {}  # clip name -> warm-up file, then the timed copies
    sources: dict[str, Path] = {}
    for res, faces in CLIPS:
        w, h = RESOLUTIONS[res]
        name = clip_name(res, faces)
        stem = f"{res}_{faces}"
        sources[name] = face_clip(workdir / f"{stem}.mp4", w, h, faces, seconds)
        # The warm-up (sessions at this frame size, allocator pools, page cache): the first third.
        files = [face_clip(workdir / f"{stem}_c00.mp4", w, h, faces, max(seconds / 3, 10 / 30))]
        for i in range(1, repeats + 1):
            files.append(Path(shutil.copy(sources[name], workdir / f"{stem}_c{i:02d}.mp4")))
        clips[name] = files
    out = workdir / "faces.arrow"

    def measure(model: str, runtime: str, precision: str = "auto") -> None:
        for decoder in decoders:
            for batch in batch_sizes:
                for clip, result in pipeline_rates(
                    clips, out, model_args.get(model, model), runtime, decoder, batch, device, precision
                ).items():
                    row = {"clip": clip, "model": model, "decoder": decoder, "batch": batch, "precision": precision}
                    row.update(runtime=label(runtime, precision) if model != "none" else "–", **result)
                    pipeline.append(row)
                    print(pipeline_line(row), flush=True)

    pipeline, naive = [], []
    measure("none", "auto")
    for model in MODELS:
        for runtime in runtimes:
            for precision in precisions:
                measure(model, runtime, precision)
        scorer = naive_scorer(model, checkpoint, naive_runtime, device, precisions[0])
        for clip, source in sources.items():
            row = {"clip": clip, "model": model, "runtime": label(naive_runtime, precisions[0])}
            row.update(naive_rates(scorer, source, repeats, naive_frames))
            naive.append(row)
            print(f"naive: {clip}, {model}, {naive_runtime} batch 1: {rate(row)} frames/s", flush=True)
        del scorer
        gc.collect()
    results = {"flops": flops, "pipeline": pipeline, "naive": naive, "batch_sizes": batch_sizes, "decoders": decoders}
    return apply_floor(results, gflops_s, label(naive_runtime, precisions[0]))


def apply_floor(results: dict, gflops_s: float, naive_runtime: str | None = None) -> dict:
    """(Re)compute the summary against the naive baseline for a peak rate of ``gflops_s``."""
    runtime = naive_runtime or results["naive_runtime"]
    results["naive_runtime"] = runtime
    results["summary"] = summarise_against_naive(
        results["pipeline"],
        results["naive"],
        results["flops"],
        gflops_s,
        runtime,
        results["batch_sizes"],
        results["decoders"],
    )
    return results


def summarise_against_naive(pipeline, naive, flops, gflops_s, runtime, batch_sizes, decoders) -> list[dict]:
    """Per clip and model: the pipeline (first decoder, largest batch, the naive's runtime) next to
    the naive baseline, with the floor and the fractions of it."""
    batch, decoder = max(batch_sizes), decoders[0]
    decode_only = {
        r["clip"]: r for r in pipeline if r["model"] == "none" and r["batch"] == batch and r["decoder"] == decoder
    }
    out = []
    for n in naive:
        p = next(
            r
            for r in pipeline
            if (r["clip"], r["model"], r["runtime"], r["batch"], r["decoder"])
            == (n["clip"], n["model"], runtime, batch, decoder)
        )
        res = n["clip"].split()[0]
        per_face = flops[n["model"]]
        fpf = p["faces_per_frame"]
        work = flops["detector"][res] + fpf * per_face
        naive_work = flops["detector_full"][res] + n["faces_per_frame"] * per_face
        floor = roofline.floor_fps(gflops_s, work)
        out.append(
            {
                "clip": n["clip"],
                "model": n["model"],
                "runtime": runtime,
                "batch": batch,
                "decoder": decoder,
                "faces_per_frame": fpf,
                "decode_only_fps": decode_only[n["clip"]]["fps_median"],
                "pipeline_fps": p["fps_median"],
                "naive_fps": n["fps_median"],
                "speedup": p["fps_median"] / n["fps_median"],
                "gflops_per_frame": work / 1e9,
                "naive_gflops_per_frame": naive_work / 1e9,
                "floor_fps": floor,
                "pipeline_of_floor": p["fps_median"] / floor,
                "naive_of_floor": n["fps_median"] / floor,
                "pipeline_memory": p["memory"],
                "naive_memory": n["memory"],
            }
        )
    return out


def pipeline_line(r: dict) -> str:
    extra = f", {r['faces_per_frame']:.2f} faces/frame" if "faces_per_frame" in r else ""
    return (
        f"score: {r['clip']}, {r['model']}, {r['decoder']}, {r['runtime']}, batch {r['batch']}: "
        f"{rate(r)} frames/s{extra}, peak RSS {memory(r['memory'])} MiB"
    )


SUMMARY_HEADERS = (
    "clip",
    "model",
    "faces/frame",
    "decode only",
    "pipeline frames/s",
    "naive frames/s",
    "pipeline / naive",
    "GFLOPs/frame",
    "floor frames/s",
    "pipeline of floor",
    "naive of floor",
    "peak RSS MiB pipeline",
    "peak RSS MiB naive",
)


def summary_row(s: dict) -> list[str]:
    return [
        s["clip"],
        s["model"],
        number(s["faces_per_frame"], 2),
        number(s["decode_only_fps"], 0),
        number(s["pipeline_fps"], 1),
        number(s["naive_fps"], 1),
        f"{s['speedup']:.1f}×",
        number(s["gflops_per_frame"], 2),
        number(s["floor_fps"], 1),
        percent(s["pipeline_of_floor"]),
        percent(s["naive_of_floor"]),
        memory(s["pipeline_memory"]),
        memory(s["naive_memory"]),
    ]


DETAIL_HEADERS = ("clip", "model", "decoder", "runtime", "batch", "frames/s", "faces/frame", "peak RSS MiB")


def markdown(results: dict, machine: dict, repeats: int, naive_frames: int | None) -> str:
    floor = floor_note(machine)
    s0 = results["summary"][0] if results["summary"] else {}
    lines = [
        f"`affbatch score` end to end on {machine.get('device', 'cpu')} ({machine['cpus']} CPUs), 30 fps face clips: "
        f"output frames/s per video, median of {repeats} videos after a warm-up one (spreads in the second table "
        f"and the JSON). Pipeline: decoder {s0.get('decoder', '–')}, runtime {s0.get('runtime', '–')}, batch "
        f"{s0.get('batch', '–')}. Naive: the same models, every frame decoded, detection at full resolution, "
        f"batch 1, nothing overlapped ({s0.get('runtime', '–')}"
        + (f", first {naive_frames} frames of each clip" if naive_frames else "")
        + f"). Floor: {floor} over the counted FLOPs the pipeline needs per frame (detector at 640 px + "
        "faces x model). Memory: peak RSS of the bench process while the clip's timed copies ran (+ its "
        "increase over the RSS before), models already loaded.",
        "",
        markdown_table(SUMMARY_HEADERS, [summary_row(s) for s in results["summary"]]),
        "Every pipeline configuration:",
        "",
        markdown_table(
            DETAIL_HEADERS,
            [
                [
                    r["clip"],
                    r["model"],
                    r["decoder"],
                    r["runtime"],
                    r["batch"],
                    rate(r),
                    number(r.get("faces_per_frame"), 2),
                    memory(r["memory"]),
                ]
                for r in results["pipeline"]
            ],
        ),
    ]
    return "\n".join(lines)
