"""The prepared GPU check: GPU tests, a short benchmark of every model, then the whole GPU path
(decoder alone vs ``score`` end to end, parity with the CPU), within 8 minutes.

Run from the repository root on a machine with an NVIDIA GPU (no network)::

    python3 scripts/gpu_check.py                 # everything, prints tables
    python3 scripts/gpu_check.py --skip-tests    # benchmarks only
    python3 scripts/gpu_check.py --out DIR       # also DIR/gpu_check.json (default: $OUT if set)

The GPU check's machine (an H200; Python 3.12, torch 2.11 CUDA, onnxruntime, scikit-image) has
no PyAV, PyNvVideoCodec, DALI or TensorRT, and no network: PyAV's and PyNvVideoCodec's wheels
travel with the tree (~62 MiB of the 64 MiB a call may carry; DALI's 199 MB cannot)::

    echo /.whl/ >> .git/info/exclude
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d .whl av==18.1.0 PyNvVideoCodec==2.2.4
    # there (carry .whl):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
        PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --out $OUT

1. ``pytest -m gpu`` over the engines' GPU tests and the GPU path's (device frames through the
   whole pipeline against the CPU's traces, device crops and NMS, nvcodec's decoder contract)
   with AFFBATCH_REQUIRE_GPU=1 (a missing GPU fails instead of skipping); tests needing what is
   not installed (TensorRT, DALI) skip.
2. frames/s of each model (detector at 640x384, expression prior, VGG-16 fc6 CNN, GRU-attention
   over 80-frame windows) at batch 1, 32 and 256, on torch CUDA fp32 / fp16 / fp16 with CUDA
   graphs and, where installed, TensorRT fp32 / fp16 (synthetic CUDA tensors in and out).
3. the GPU path (``bench.gpu``): per 360p/720p/1080p face clip with one and two faces, the GPU
   decoder alone (NVDEC, no models) and ``score`` end to end with it and torch CUDA, frames/s,
   end to end as a fraction of decode alone (the target: >= 0.6), GPU memory, and parity with
   the CPU path's traces (PyAV + ONNX Runtime) on the same clips; then memory over 500 short
   clips through one decoder.
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
    cmd += ["tests/test_device_frames.py", "tests/faces", "tests/video/test_nvcodec.py"]
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


def gpu_path(workdir: Path, deadline: float, seconds: float, repeats: int) -> dict:
    """Section 3: ``bench.gpu`` on the GPU decoders here, then the 500-clip memory churn."""
    from affbatch.video.decoders import availability
    from bench import gpu

    usable = availability("cuda")
    if usable["pyav"] is not None:
        return {"skipped": f"pyav {usable['pyav']}: clips cannot be made (carry its wheel)"}
    results = gpu.run(workdir, seconds, repeats, "cuda:0", deadline=deadline - 60)
    decoders = results["decoders"]
    if decoders and time.monotonic() < deadline - 40:
        results["churn"] = {decoders[0]: gpu.churn(decoders[0], workdir, "cuda:0", clips=500, every=100)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-tests", action="store_true", help="benchmark only")
    parser.add_argument("--budget", type=float, default=470, help="seconds for the whole check (default 470)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each GPU-path clip (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per GPU-path figure (default 3)")
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
    # Time shares of the budget: tests 40%, the models' benchmark 15%, the GPU path the rest.
    tests = {"skipped": True} if args.skip_tests else run_tests(timeout_s=max(60.0, args.budget * 0.4))
    print(f"tests: {tests}", flush=True)
    rows = benchmark(deadline=min(time.monotonic() + args.budget * 0.15, started + args.budget - 20))
    print(table(rows), flush=True)
    with tempfile.TemporaryDirectory(prefix="affbatch-gpu-path-") as workdir:
        try:
            path = gpu_path(Path(workdir), started + args.budget, args.seconds, args.repeats)
        except Exception as exc:  # a result too: say it and keep the rest of the report
            path = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
    path_table = path_report(path, machine, args.repeats)
    print(path_table, flush=True)
    print(f"GPU check done in {time.monotonic() - started:.0f} s", flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine, "tests": tests, "benchmark": rows, "gpu_path": path}
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "gpu_check.txt").write_text(table(rows) + "\n\n" + path_table + "\n")
    return 0 if tests.get("skipped") or tests.get("returncode") == 0 else 1


def path_report(path: dict, machine: dict, repeats: int) -> str:
    if "rows" not in path:
        return f"GPU path: {path}"
    from bench import gpu

    text = gpu.markdown(path, machine, repeats)
    for name, samples in path.get("churn", {}).items():
        text += f"\n\n{name} over {samples[-1]['clips']} short clips (RSS MiB, device GPU MiB): " + ", ".join(
            f"{s['clips']}: {s['rss_mib']:.0f}/{s.get('gpu_used_mib', 0):.0f}" for s in samples
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
