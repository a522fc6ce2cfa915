"""``python -m bench.overhead``: ``affbatch score`` against its detector alone (issue 13's target).

On one-face 30 fps clips, three rates in interleaved rounds (load from other processes falls on
each alike), all in one runtime and precision: ``score`` with the prior; ``score --model
faces`` (decode, detect, track: no affect model); and the detector's inference alone on frames
decoded beforehand (its pre- and post-processing included). The ratios say what the rest of
the pipeline costs: the target is ``score`` with the prior at >= 0.8 of the detector alone.
Output frames/s, median (min-max) of the rounds after a warm-up.
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


def detector_rate(detector, frames: np.ndarray, batch_size: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(frames), batch_size):
        detector(frames[start : start + batch_size])
    return len(frames) / (time.perf_counter() - t0)


def scorer_rate(scorer, clip: Path) -> float:
    t0 = time.perf_counter()
    result = scorer.score(clip)
    seconds = time.perf_counter() - t0
    if result.row.status != "ok":
        raise RuntimeError(f"{clip.name}: {result.row.error}")
    return result.row.frames / seconds


def measure(clip: Path, runtime: str, precision: str, batch_size: int, rounds: int) -> dict[str, list[float]]:
    import av

    from affbatch import Scorer
    from affbatch.faces.detector import FaceDetector

    options = {"runtime": runtime, "precision": precision, "batch_size": batch_size}
    scorers = {"prior": Scorer(model="prior", **options), "faces": Scorer(model="faces", **options)}
    detector = FaceDetector.default(runtime=runtime, precision=precision)
    with av.open(str(clip)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    for scorer in scorers.values():  # warm-up: sessions at this frame size, the page cache
        scorer_rate(scorer, clip)
    detector_rate(detector, frames, batch_size)
    rates: dict[str, list[float]] = {"score prior": [], "score faces": [], "detector alone": []}
    for _ in range(rounds):
        rates["score prior"].append(scorer_rate(scorers["prior"], clip))
        rates["score faces"].append(scorer_rate(scorers["faces"], clip))
        rates["detector alone"].append(detector_rate(detector, frames, batch_size))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", nargs="+", default=["360p", "720p"], choices=list(RESOLUTIONS))
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    from engines.cpuinfo import describe, summary

    print(describe(summary()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in args.resolutions:
            width, height = RESOLUTIONS[resolution]
            clip = face_clip(Path(tmp) / f"{resolution}.mp4", width, height, 1, args.seconds)
            rates = measure(clip, args.runtime, args.precision, args.batch_size, args.rounds)
            medians = {name: statistics.median(values) for name, values in rates.items()}
            for name, values in rates.items():
                print(
                    f"{resolution} {args.runtime} {args.precision} {name}: {medians[name]:.1f} frames/s "
                    f"({min(values):.1f}-{max(values):.1f}), {medians[name] / medians['detector alone']:.2f}x "
                    "the detector alone",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
