"""``python -m bench.precision``: ``affbatch score`` in fp32 and with ``--precision auto``, side by side.

For each model (the prior, ``vggface-gru-attn`` with an untrained init: weights do not change
the work) and each resolution asked, one-face 30 fps clips are scored by two Scorers loaded once
(fp32: ``--runtime auto --precision fp32``, today's CPU default; auto: ``--precision auto``,
per model the fastest runtime x precision measured here). Rounds interleave the two, so load
from other processes falls on both alike; output frames/s per video, median (min-max) of the
rounds after a warm-up video each, and their ratio. The CPU and what auto chose are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.media import face_clip
from bench.models import RESOLUTIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", nargs="+", default=["360p", "720p"], choices=list(RESOLUTIONS))
    parser.add_argument("--models", nargs="+", default=["prior", "vggface-gru-attn"])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="RUNTIME:PRECISION",
        help="more configurations timed in the same rounds, e.g. openvino:bf16 (every model in it)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    from affbatch.pipeline import Scorer
    from bench.faces import untrained_checkpoint
    from engines.cpuinfo import describe, summary

    cpu = summary()
    print(describe(cpu), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="affbatch-precision-") as tmp:
        tmp = Path(tmp)
        checkpoint = untrained_checkpoint(tmp / "init")
        for model in args.models:
            name = "auto" if model == "prior" else str(checkpoint)
            scorers = {p: Scorer(model=name, device="cpu", precision=p) for p in ("fp32", "auto")}
            for extra in args.also:
                runtime, _, precision = extra.partition(":")
                scorers[extra] = Scorer(model=name, device="cpu", runtime=runtime, precision=precision)
            for p, s in scorers.items():
                print(f"{model} {p}: {s.metadata['runtime']}; {s.metadata['precision']}", flush=True)
            for res in args.resolutions:
                w, h = RESOLUTIONS[res]
                clip = face_clip(tmp / f"{res}.mp4", w, h, 1, args.seconds)
                warm = face_clip(tmp / f"{res}_warm.mp4", w, h, 1, 0.5)
                for s in scorers.values():
                    s.score(warm)
                rates: dict[str, list[float]] = {p: [] for p in scorers}
                for _ in range(args.rounds):
                    for p, s in scorers.items():
                        t0 = time.perf_counter()
                        result = s.score(clip)
                        rates[p].append(result.row.frames / (time.perf_counter() - t0))
                row = {"model": model, "clip": f"{res} 1 face", "rounds": args.rounds}
                for p, r in rates.items():
                    r.sort()
                    used = f"{scorers[p].metadata['runtime']}; {scorers[p].metadata['precision']}"
                    row[p] = {"median": statistics.median(r), "min": r[0], "max": r[-1], "used": used}
                row["auto_over_fp32"] = row["auto"]["median"] / row["fp32"]["median"]
                rows.append(row)
                figures = ", ".join(
                    f"{p} {row[p]['median']:.1f} ({row[p]['min']:.1f}–{row[p]['max']:.1f}, "
                    f"{row[p]['median'] / row['fp32']['median']:.2f}x)"
                    for p in scorers
                )
                print(f"{model}, {row['clip']} frames/s: {figures}", flush=True)
            del scorers
    if args.out is not None:
        args.out.write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
