"""python -m bench: throughput figures of this machine, side by side.

``decode``: each decoder backend at 360p and 720p, 30 and 60 fps sources, --fps 30 and native.
``faces``: ``affbatch score`` with the expression prior and with vggface-gru-attn on a one-face
640x360 clip, next to the VGG-16 ceiling. Medians and spreads of repeated runs after a warm-up;
JSON and Markdown go to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from bench import decode, faces

SUITES = ("decode", "faces")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "suites", nargs="*", metavar="SUITE", help=f"what to measure: {', '.join(SUITES)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="short clips and 3 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each generated clip")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if unknown := set(args.suites) - set(SUITES):
        parser.error(f"unknown suite {', '.join(sorted(unknown))}: choose from {', '.join(SUITES)}")
    if args.quick:
        args.repeats, args.seconds = 3, 3.0
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="affbatch-bench-") as tmp:
        tmp = Path(tmp)
        for suite in args.suites or SUITES:
            if suite == "decode":
                results = decode.run(tmp, args.seconds, args.repeats, args.batch_size)
                table = decode.markdown(results, machine, args.repeats)
            else:
                results = faces.run(tmp, args.seconds, args.repeats)
                table = faces.markdown(results, args.repeats)
            (args.out / f"{suite}.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
            (args.out / f"{suite}.md").write_text(table)
            print()
            print(table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
