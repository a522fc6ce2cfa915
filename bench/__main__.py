"""python -m bench: throughput figures of this machine, side by side.

``decode``: each decoder backend at 360p, 720p and 1080p, 30 and 60 fps sources, --fps 30 and
native. ``models``: each model stage alone (detector, prior, VGG-16 to fc6, GRU + attention) per
runtime and batch size, next to its compute floor. ``faces``: ``affbatch score`` end to end on
360p/720p/1080p clips with one and two faces, with the prior and with vggface-gru-attn, next to a
naive baseline and the compute floor. ``gpu`` (a CUDA device only): each GPU decoder alone and
``score`` end to end with frames kept on the GPU, with parity against the CPU path. ``scale``:
frames/s with 1..N worker processes beside one process, and the per-video cost of a worker
(``affbatch score --workers``). Medians and spreads of repeated runs after a warm-up, peak memory;
JSON, Markdown and PNG plots go to --out.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench import decode, faces, gpu, models, plots, scale
from bench.report import write_suite

SUITES = ("decode", "models", "faces", "gpu", "scale")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "suites", nargs="*", metavar="SUITE", help=f"what to measure: {', '.join(SUITES)} (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 s clips, 3 repeats, fewer items and batch sizes, 6-frame naive runs"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up (default 5; quick 3)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="length of each generated clip (default 5; quick 1)"
    )
    parser.add_argument(
        "--batch-size", type=int, nargs="+", default=[64], help="frames per batch of decode and score (default 64)"
    )
    parser.add_argument(
        "--runtime",
        nargs="+",
        default=None,
        help="runtimes of score in the faces suite (default: every one here; quick: the default one)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["auto"],
        help="precisions of score in the faces suite, each with every runtime, side by side (default auto; "
        "e.g. fp32 auto); the models suite measures every precision each runtime runs here",
    )
    parser.add_argument(
        "--naive-frames", type=int, default=None, help="frames of each naive run (default: the whole clip; quick 6)"
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="scale: worker processes up to this many (default: the CPUs, at least 2)",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="scale: also on this Ray cluster's actors (--max-workers per node)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if unknown := set(args.suites) - set(SUITES):
        parser.error(f"unknown suite {', '.join(sorted(unknown))}: choose from {', '.join(SUITES)}")
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    if args.naive_frames is None and args.quick:
        args.naive_frames = 6
    return args


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: str) -> dict:
    import onnxruntime
    import torch

    from engines.cpuinfo import summary

    info = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        # the CPU's model, its AMX/AVX512-BF16/VNNI/AVX2 flags, bf16 in hardware, the runtimes' reports
        "cpu": summary(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "openvino": _version("openvino"),
        "device": device,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import engines

    for precision in args.precision:  # a precision this machine cannot run: say so now, in one line
        try:
            engines.check_precision(precision)
            engines.resolve("auto", args.device, precision)
        except engines.EngineError as exc:
            print(f"bench: --precision {precision}: {exc}", file=sys.stderr)
            return 2
    placement = engines.resolve("auto", args.device)  # once per run, as a score run does
    device = placement.device
    machine = machine_info(device)
    suites = args.suites or list(SUITES)
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    floors = {"models", "faces"} & set(suites)
    gflops_s = float("nan")
    if floors:
        from bench.roofline import peak_gflops

        machine["peak_start"] = peak_gflops(device)
        gflops_s = machine["floor_gflops"] = machine["peak_start"]["gflops"]
        print(peak_lines(machine["peak_start"]), flush=True)
    default_runtime = placement.runtime
    done: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="affbatch-bench-") as tmp:
        tmp = Path(tmp)
        for suite in suites:
            t0 = time.perf_counter()
            print(f"\n== {suite} ==", flush=True)
            if suite == "decode":
                results = []
                for batch in args.batch_size:
                    results += decode.run(tmp, args.seconds, args.repeats, batch, args.quick)
            elif suite == "models":
                results = models.run(tmp, args.repeats, args.quick, device, gflops_s)
            elif suite == "gpu":
                if not device.startswith("cuda"):
                    print("gpu: needs a CUDA device (--device cuda); skipped", flush=True)
                    continue
                resolutions = ("360p", "720p") if args.quick else tuple(gpu.RESOLUTIONS)
                results = gpu.run(tmp, args.seconds, args.repeats, device, args.batch_size[-1], resolutions=resolutions)
            elif suite == "scale":
                results = scale.run(tmp, args.seconds, args.repeats, args.device, args.max_workers, args.ray)
            else:
                from affbatch.video import decoders

                runtimes = args.runtime or ([default_runtime] if args.quick else models.runtimes_for(device))
                results = faces.run(
                    tmp,
                    args.seconds,
                    args.repeats,
                    device,
                    gflops_s,
                    runtimes,
                    args.batch_size,
                    [n for n, why in decoders.availability().items() if why is None and n not in decode.GPU_DECODERS],
                    naive_runtime=default_runtime if default_runtime in runtimes else runtimes[0],
                    naive_frames=args.naive_frames,
                    precisions=args.precision,
                )
            done[suite] = results
            write(suite, results, machine, args)  # now, in case a later suite fails
            print(f"{suite}: {time.perf_counter() - t0:.0f} s", flush=True)
    if floors:
        # The ceiling of the roofline is the machine's best rate: the best of the dense kernels at
        # the start and at the end (on a shared machine, other work pulls the medians down).
        machine["peak_end"] = peak_gflops(device)
        gflops_s = machine["floor_gflops"] = max(gflops_s, machine["peak_end"]["gflops"])
        print(f"at the end:\n{peak_lines(machine['peak_end'])}\nfloor from {gflops_s:.0f} GFLOP/s", flush=True)
        if "models" in done:
            models.apply_floor(done["models"], gflops_s)
        if "faces" in done:
            faces.apply_floor(done["faces"], gflops_s)
    for suite, results in done.items():
        table, paths = write(suite, results, machine, args)
        print()
        print(table, flush=True)
        print(f"wrote {', '.join(map(str, paths))}", flush=True)
    print(f"\nbench: {time.perf_counter() - t_start:.0f} s in all", flush=True)
    return 0


def peak_lines(peak: dict) -> str:
    lines = [
        f"{k.get('precision', 'fp32')} {k['kernel']}: {k['gflops_median']:.0f} GFLOP/s median, "
        f"{k['gflops_min']:.0f}–{k['gflops_max']:.0f} over {k['runs']} runs"
        for k in peak["kernels"]
    ]
    per = peak.get("per_precision", {})
    lines.append("best per precision: " + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in per.items()))
    return "\n".join(lines)


def write(suite: str, results, machine: dict, args: argparse.Namespace) -> tuple[str, list[Path]]:
    """The suite's Markdown table, JSON and plot in --out."""
    if suite == "decode":
        table = decode.markdown(results, machine, args.repeats)
        plot = plots.decode_plot(results, machine, args.out / "decode.png")
    elif suite == "models":
        table = models.markdown(results, machine, args.repeats)
        plot = plots.models_plot(results, machine, args.out / "models.png")
    elif suite == "gpu":
        table = gpu.markdown(results, machine, args.repeats)
        json_path, md_path = write_suite(args.out, suite, machine, results, table)
        return table, [json_path, md_path]
    elif suite == "scale":
        table = scale.markdown(results, machine, args.repeats)
        json_path, md_path = write_suite(args.out, suite, machine, results, table)
        return table, [json_path, md_path]
    else:
        table = faces.markdown(results, machine, args.repeats, args.naive_frames)
        plot = plots.faces_plot(results, machine, args.out / "faces.png")
    json_path, md_path = write_suite(args.out, suite, machine, results, table)
    return table, [json_path, md_path, plot]


if __name__ == "__main__":
    sys.exit(main())
