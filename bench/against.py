"""``python -m bench.against REV``: ``affbatch score`` of this tree against an earlier revision's.

"Before and after" measured side by side in one run: the revision ``REV``'s tree (``git
archive``, into a temporary folder) and this one score the same one-face 30 fps clips, each
configuration in its own Python process (a revision's modules cannot share one), rounds
interleaved so that load from other processes falls on every configuration alike. Configurations:
``REV`` (its defaults: what ``affbatch score`` did then), ``fp32`` (this tree, ``--precision
fp32``) and ``auto`` (this tree, ``--precision auto``: per model the fastest runtime x precision
that holds its accuracy gates here). Each process loads its Scorer once, scores a short warm-up
clip, then the clip ``--repeats`` times; a configuration's figure is the median (min-max) of
those rates over every round, and its ratio to ``REV``'s median.

Each tree keeps its own engine cache (a temporary one), so neither reuses the other's compiled
models. The models: the embedded prior and ``vggface-gru-attn`` (an untrained init: the weights do
not change the work).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.media import face_clip
from bench.models import RESOLUTIONS

#: Runs in a tree's own process: only the API every revision since the layout has (Scorer.score).
DRIVER = """
import json, sys, time
import affbatch
from affbatch.pipeline import Scorer
clip, warm, model, repeats, options = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
scorer = Scorer(model=model, device="cpu", **options)
scorer.score(warm)
rates = []
for _ in range(repeats):
    t0 = time.perf_counter()
    result = scorer.score(clip)
    if result.row.status != "ok":
        raise SystemExit(f"{clip}: {result.row.error}")
    rates.append(result.row.frames / (time.perf_counter() - t0))
print(json.dumps({"rates": rates, "affbatch": affbatch.__file__, "runtime": scorer.metadata.get("runtime"),
                  "precision": scorer.metadata.get("precision")}))
"""


def export_tree(revision: str, folder: Path) -> Path:
    """``revision``'s files (git archive) in ``folder``; SystemExit with git's reason otherwise."""
    root = Path(__file__).resolve().parents[1]
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(root), "archive", revision], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"bench.against: git archive {revision}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def run_once(tree: Path, cache: Path, clip: Path, warm: Path, model: str, repeats: int, options: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "AFFBATCH_CACHE_DIR": str(cache)}
    env.pop("AFFBATCH_AUTO_PRECISION", None)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(clip), str(warm), model, str(repeats), json.dumps(options)],
        capture_output=True, text=True, env=env, cwd=tree,  # not this tree's folder: python -c puts cwd first
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench.against: {tree.name}, {model}, {clip.name}: {done.stderr.strip()[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(figures["affbatch"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"bench.against: {tree} imported affbatch from {figures['affbatch']} (an installed copy?)")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.against", description=__doc__.splitlines()[0])
    parser.add_argument("revision", help="a git revision of this repository (e.g. 7261e15, HEAD~3)")
    parser.add_argument("--resolutions", nargs="+", default=["360p", "720p"], choices=list(RESOLUTIONS))
    parser.add_argument(
        "--models", nargs="+", default=["prior", "vggface-gru-attn"], help="also faces, none, or a checkpoint"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="timed scores per process")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    from bench.faces import untrained_checkpoint
    from engines.cpuinfo import describe, summary

    print(describe(summary()), flush=True)
    this = Path(__file__).resolve().parents[1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="affbatch-against-") as tmp:
        tmp = Path(tmp)
        before = export_tree(args.revision, tmp / "before")
        configs = {args.revision: (before, {}), "fp32": (this, {"precision": "fp32"}),
                   "auto": (this, {"precision": "auto"})}  # fmt: skip
        checkpoint = untrained_checkpoint(tmp / "init")
        for res in args.resolutions:
            w, h = RESOLUTIONS[res]
            clip = face_clip(tmp / f"{res}.mp4", w, h, 1, args.seconds)
            warm = face_clip(tmp / f"{res}_warm.mp4", w, h, 1, 0.5)
            for model in args.models:
                name = str(checkpoint) if model == "vggface-gru-attn" else model  # prior, faces, none, a path
                rates: dict[str, list[float]] = {c: [] for c in configs}
                used: dict[str, str] = {}
                for _ in range(args.rounds):
                    for label, (tree, options) in configs.items():
                        cache = tmp / f"cache-{'before' if tree == before else 'this'}"
                        figures = run_once(tree, cache, clip, warm, name, args.repeats, options)
                        rates[label] += figures["rates"]
                        used[label] = f"{figures['runtime']}; {figures['precision']}"
                base = statistics.median(rates[args.revision])
                row = {"model": model, "clip": f"{res} 1 face", "configs": {}}
                parts = []
                for label, r in rates.items():
                    r.sort()
                    median = statistics.median(r)
                    row["configs"][label] = {"median": median, "min": r[0], "max": r[-1], "ratio": median / base,
                                             "used": used[label]}  # fmt: skip
                    parts.append(f"{label} {median:.1f} ({r[0]:.1f}-{r[-1]:.1f}, {median / base:.2f}x)")
                rows.append(row)
                print(f"{model}, {res} 1 face, frames/s: " + ", ".join(parts), flush=True)
                for label in configs:
                    print(f"  {label}: {used[label]}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"cpu": summary(), "revision": args.revision, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
