"""``python -m bench.overhead``: ``affbatch score`` against its models alone (issue 13's targets).

On one-face 30 fps clips, in interleaved rounds (load from other processes falls on each alike),
every rate with the *same* engines (the Scorer's own, so the same runtime and precision):

* ``score <model>``: the whole pipeline (probe, decode, detect, track, crop, affect, write);
* ``score faces``: decode, detect, track (no affect model);
* ``detector alone``: the Scorer's detector over the clip's frames decoded beforehand
  (its pre- and post-processing included);
* ``models alone``: the detector, then the affect model over the clip's crops cut beforehand
  (the prior: one call per batch of faces; ``vggface-gru-attn``: VGG-16 features, then the
  GRU/attention windows of the one track), back to back, nothing else.

The targets: ``score`` with the prior >= 0.8 of the detector alone, and ``score`` with
``vggface-gru-attn`` >= 0.8 of its models alone (what the pipeline costs beyond the networks; the
issue's "VGG-only" read as the networks ``score`` cannot skip: with the detector on every frame,
no pipeline reaches VGG-16's own rate). Output frames/s, median (min-max) of the rounds after a
warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.media import face_clip
from bench.models import RESOLUTIONS

MODELS = ("prior", "vggface-gru-attn")


def detector_seconds(detector, frames: np.ndarray, batch_size: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(frames), batch_size):
        detector(frames[start : start + batch_size])
    return time.perf_counter() - t0


def detector_rate(detector, frames: np.ndarray, batch_size: int) -> float:
    return len(frames) / detector_seconds(detector, frames, batch_size)


def affect_seconds(affect, crops: np.ndarray, batch_size: int) -> float:
    """Seconds the affect model takes over ``crops`` (one track, in order), batch by batch."""
    from affbatch.affect.runners import FrameAffect

    t0 = time.perf_counter()
    if isinstance(affect, FrameAffect):
        for start in range(0, len(crops), batch_size):
            affect(crops[start : start + batch_size])
    else:
        stream = affect.new_stream()
        for start in range(0, len(crops), batch_size):
            affect.push(stream, affect.features(crops[start : start + batch_size]))
        affect.finish(stream)
    return time.perf_counter() - t0


def models_rate(detector, affect, frames: np.ndarray, crops: np.ndarray, batch_size: int) -> float:
    seconds = detector_seconds(detector, frames, batch_size) + affect_seconds(affect, crops, batch_size)
    return len(frames) / seconds


def scorer_rate(scorer, clip: Path) -> float:
    t0 = time.perf_counter()
    result = scorer.score(clip)
    seconds = time.perf_counter() - t0
    if result.row.status != "ok":
        raise RuntimeError(f"{clip.name}: {result.row.error}")
    return result.row.frames / seconds


def clip_crops(detector, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """The crops ``score`` feeds the affect model: the best face of every frame that has one."""
    from affbatch.faces.crops import crop_faces

    frame_of_face, boxes = [], []
    for start in range(0, len(frames), batch_size):
        for k, found in enumerate(detector(frames[start : start + batch_size])):
            if len(found):
                frame_of_face.append(start + k)
                boxes.append(found.boxes[int(np.argmax(found.scores))])
    if not boxes:
        raise RuntimeError("no face found in the clip")
    return crop_faces(frames, np.asarray(frame_of_face), np.asarray(boxes))


def measure(
    clip: Path,
    runtime: str,
    precision: str,
    batch_size: int,
    rounds: int,
    model: str = "prior",
    checkpoint: Path | None = None,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Rates per configuration (the module doc), and what the Scorer ran (runtime, precision)."""
    import av

    from affbatch import Scorer

    options = {"runtime": runtime, "precision": precision, "batch_size": batch_size}
    name = "prior" if model == "prior" else str(checkpoint)
    scorers = {f"score {model}": Scorer(model=name, **options), "score faces": Scorer(model="faces", **options)}
    main = scorers[f"score {model}"]
    detector, affect = main.analyzer.detector, main.analyzer.affect
    with av.open(str(clip)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    crops = clip_crops(detector, frames, batch_size)
    for scorer in scorers.values():  # warm-up: sessions at this frame size, the page cache
        scorer_rate(scorer, clip)
    models_rate(detector, affect, frames, crops, batch_size)
    rates: dict[str, list[float]] = {**{k: [] for k in scorers}, "models alone": [], "detector alone": []}
    for _ in range(rounds):
        for key, scorer in scorers.items():
            rates[key].append(scorer_rate(scorer, clip))
        rates["models alone"].append(models_rate(detector, affect, frames, crops, batch_size))
        rates["detector alone"].append(detector_rate(detector, frames, batch_size))
    used = {"runtime": main.metadata["runtime"], "precision": main.metadata["precision"]}
    return rates, used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", nargs="+", default=["360p", "720p"], choices=list(RESOLUTIONS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    from bench.faces import untrained_checkpoint
    from engines.cpuinfo import describe, summary

    print(describe(summary()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = untrained_checkpoint(Path(tmp) / "init")
        for resolution in args.resolutions:
            width, height = RESOLUTIONS[resolution]
            clip = face_clip(Path(tmp) / f"{resolution}.mp4", width, height, 1, args.seconds)
            for model in args.models:
                rates, used = measure(
                    clip, args.runtime, args.precision, args.batch_size, args.rounds, model, checkpoint
                )
                print(f"{resolution}, {model}: {used['runtime']}; {used['precision']}", flush=True)
                medians = {name: statistics.median(values) for name, values in rates.items()}
                for name, values in rates.items():
                    print(
                        f"  {name}: {medians[name]:.1f} frames/s ({min(values):.1f}-{max(values):.1f}), "
                        f"{medians[name] / medians['detector alone']:.2f}x the detector alone, "
                        f"{medians[name] / medians['models alone']:.2f}x the models alone",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
