"""The prepared GPU check: the GPU tests, then a short GPU benchmark of every model, in < 5 minutes.

Run from the repository root on a machine with an NVIDIA GPU (no install needed, no network,
no PyAV: the benchmark feeds synthetic tensors to the models)::

    python3 scripts/gpu_check.py                 # tests + benchmark, prints a table
    python3 scripts/gpu_check.py --skip-tests    # benchmark only
    python3 scripts/gpu_check.py --out DIR       # also DIR/gpu_check.json (default: $OUT if set)

1. ``pytest -m gpu tests/engines/test_engines.py tests/engines/test_engines_gpu.py`` with AFFBATCH_REQUIRE_GPU=1
   (a missing GPU fails instead of skipping); TensorRT tests skip if TensorRT is not installed.
2. frames/s of each model (detector at 640x384, expression prior, VGG-16 fc6 CNN, GRU-attention
   over 80-frame windows) at batch 1, 32 and 256, on torch CUDA fp32 / fp16 / fp16 with CUDA
   graphs and, where installed, TensorRT fp32 / fp16. Inputs and outputs are torch CUDA tensors
   (what a GPU pipeline feeds); median of repeated timed calls after a warm-up, with the spread.
   torch fp32 is torch's default: TF32 convolutions (cuDNN), float32 matmuls.
Exit status: 0 when the tests pass (or were skipped with --skip-tests), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCHES = (1, 32, 256)
CONFIGS = (
    ("torch-fp32", "torch", "fp32", {}),
    ("torch-fp16", "torch", "fp16", {}),
    ("torch-fp16-graphs", "torch", "fp16", {"cuda_graphs": True}),
    ("tensorrt-fp32", "tensorrt", "fp32", {}),
    ("tensorrt-fp16", "tensorrt", "fp16", {}),
)
#: Benchmark sizes per model: batch -> input size (the temporal model: 80-frame windows).
SIZES = {
    "detector": lambda b: (b, 384, 640),
    "prior": lambda b: (b,),
    "vggface-cnn": lambda b: (b,),
    "vggface-temporal": lambda b: (b, 80),
}


def run_tests(timeout_s: float) -> dict:
    env = {
        **os.environ,
        "AFFBATCH_REQUIRE_GPU": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "AFFBATCH_CACHE_DIR": tempfile.mkdtemp(prefix="affbatch-gpu-check-"),
    }
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra"]
    cmd += ["tests/engines/test_engines.py", "tests/engines/test_engines_gpu.py"]
    print("$ AFFBATCH_REQUIRE_GPU=1 " + " ".join(cmd[1:]), flush=True)
    started = time.monotonic()
    try:
        result = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout_s)
        code = result.returncode
    except subprocess.TimeoutExpired:
        print(f"tests: timed out after {timeout_s:.0f} s", flush=True)
        code = -1
    return {"returncode": code, "seconds": round(time.monotonic() - started, 1)}


def time_calls(engine, inputs, min_repeats: int = 5, max_seconds: float = 1.0) -> list[float]:
    import torch

    for _ in range(3):  # warm-up: cuDNN algorithm choice, graph capture, TensorRT context set-up
        engine(*inputs)
    torch.cuda.synchronize()
    times: list[float] = []
    budget_end = time.perf_counter() + max_seconds
    while len(times) < min_repeats or (time.perf_counter() < budget_end and len(times) < 50):
        start = time.perf_counter()
        engine(*inputs)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def benchmark(deadline: float) -> list[dict]:
    import torch

    import engines
    from tests.engines.engine_models import SPECS

    rows = []
    trt_missing = engines.availability()["tensorrt"]["cuda"]
    for spec in SPECS:
        module = spec.make()
        for label, runtime, precision, options in CONFIGS:
            base = {"model": spec.name, "config": label}
            if runtime == "tensorrt" and trt_missing:
                rows += [base | {"batch": b, "skipped": f"tensorrt: {trt_missing}"} for b in BATCHES]
                continue
            if time.monotonic() > deadline:
                rows += [base | {"batch": b, "skipped": "time budget spent"} for b in BATCHES]
                continue
            try:
                started = time.monotonic()
                engine = engines.compile(
                    module, spec.example_inputs(), spec.input_names, spec.output_names, spec.dynamic_axes,
                    runtime=runtime, device="cuda", precision=precision, options=engines.EngineOptions(**options),
                )  # fmt: skip
                compile_s = time.monotonic() - started
            except Exception as exc:  # report and go on: one runtime's failure is a result too
                rows += [base | {"batch": b, "skipped": f"{type(exc).__name__}: {exc}"[:200]} for b in BATCHES]
                continue
            for batch in BATCHES:
                size = SIZES[spec.name](batch)
                inputs = [x.cuda() for x in spec.inputs(size, 0)]
                try:
                    times = time_calls(engine, inputs)
                except Exception as exc:
                    rows.append(base | {"batch": batch, "skipped": f"{type(exc).__name__}: {exc}"[:200]})
                    continue
                median = statistics.median(times)
                q = statistics.quantiles(times, n=4) if len(times) >= 4 else [min(times), median, max(times)]
                frames = spec.frames(size)
                rows.append(
                    base
                    | {
                        "batch": batch,
                        "input": list(size),
                        "frames_per_s": frames / median,
                        "median_ms": median * 1e3,
                        "iqr_ms": (q[2] - q[0]) * 1e3,
                        "repeats": len(times),
                        "compile_s": round(compile_s, 1),
                    }
                )
            del engine
            torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    labels = [c[0] for c in CONFIGS]
    lines = [f"{'model':18} {'batch':>5}  " + "  ".join(f"{c:>18}" for c in labels)]
    cells = {(r["model"], r["batch"], r["config"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        for batch in BATCHES:
            out = []
            for c in labels:
                r = cells.get((model, batch, c))
                if r is None or "skipped" in r:
                    out.append(f"{'-':>18}")
                else:
                    spread = 100 * r["iqr_ms"] / r["median_ms"]
                    out.append(f"{r['frames_per_s']:>11,.0f} ±{spread:>3.0f}%")
            lines.append(f"{model:18} {batch:>5}  " + "  ".join(out))
    lines.append("frames/s (median of timed calls; ± is the interquartile range relative to the median).")
    lines.append("vggface-temporal counts 80 frames per batch element; detector frames are 640x384.")
    skipped = sorted({f"{r['config']}: {r['skipped']}" for r in rows if "skipped" in r})
    lines += [f"not measured: {s}" for s in skipped]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-tests", action="store_true", help="benchmark only")
    parser.add_argument("--budget", type=float, default=270, help="seconds for the whole check (default 270)")
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    args = parser.parse_args(argv)
    started = time.monotonic()

    import torch

    import engines

    if not torch.cuda.is_available():
        print(f"no CUDA device: torch {torch.__version__} (cuda {torch.version.cuda}) sees none", flush=True)
        return 1
    p = torch.cuda.get_device_properties(0)
    trt = engines.availability()["tensorrt"]["cuda"]
    machine = {
        "gpu": p.name,
        "compute_capability": f"{p.major}.{p.minor}",
        "memory_gib": round(p.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tensorrt": "available" if trt is None else trt,
        "python": sys.version.split()[0],
    }
    print("GPU check: " + ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    tests = {"skipped": True} if args.skip_tests else run_tests(timeout_s=max(60.0, args.budget * 0.6))
    print(f"tests: {tests}", flush=True)
    rows = benchmark(deadline=started + args.budget - 20)
    print(table(rows), flush=True)
    print(f"GPU check done in {time.monotonic() - started:.0f} s", flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine, "tests": tests, "benchmark": rows}
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        (args.out / "gpu_check.txt").write_text(table(rows) + "\n")
    return 0 if tests.get("skipped") or tests.get("returncode") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
