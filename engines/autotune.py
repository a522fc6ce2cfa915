"""``auto`` on the CPU: per machine and per model, the fastest runtime x precision, measured once.

Which is fastest depends on the CPU and on the model (issue 13, a 2-core Xeon with AMX:
OpenVINO bf16 2.4x ONNX Runtime fp32 on RetinaFace, 3.3x on VGG-16; on a CPU without bf16 in
hardware bf16 is emulated and ~500x slower, so it is never a candidate there). So where the
machine has bf16 (``engines.cpuinfo``) and the caller left the runtime or the precision to
``auto``, every candidate that can run here is compiled and timed on inputs of a typical size
(:data:`TUNE_SIZES`), and the fastest is used. The decision, with every candidate's timings, is
kept in ``<cache root>/autotune/<key>.json``, keyed by the graph, the candidates, the CPU and
the runtimes' versions: later runs take it without timing anything.

Accuracy is not judged here, nor assumed: a module runs in bf16 under ``auto`` only in the
runtimes its class lists in ``bf16_runtimes`` (:data:`BF16_ATTRIBUTE`), which its owner's tests
check (affbatch's gates on real faces: ``tests/engines/test_precision_gates.py``).
``AFFBATCH_AUTO_PRECISION=fp32`` makes ``auto`` float32 everywhere (no tuning).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from engines.base import Engine, RuntimeUnavailable
from engines.locking import write_atomically

log = logging.getLogger("engines")

Candidate = tuple[str, str]  # (runtime, precision)

#: Sizes of the dynamic axes the candidates are timed at (axis names of the callers'
#: ``dynamic_axes``; others keep the example's size). Large enough that per-call overheads do not
#: decide, small enough that tuning a model takes seconds on 2 cores: batches of 8 frames at
#: 384x640, 16 faces, 80-step windows (the affect model's).
TUNE_SIZES = {"batch": 8, "faces": 16, "time": 80, "height": 384, "width": 640}
#: Timed runs per candidate, after one warm-up run (which also triggers lazy compilation).
REPEATS = 3
#: A candidate this many times slower than the best so far in its first timed run is not timed further.
HOPELESS = 3.0
#: ``auto``'s precision may be pinned for a whole process (e.g. reproducible fp32 runs, tests).
PIN_ENV = "AFFBATCH_AUTO_PRECISION"


def pinned_precision() -> str | None:
    """The precision ``auto`` is pinned to by :data:`PIN_ENV` (None: not pinned)."""
    value = os.environ.get(PIN_ENV, "").strip()
    if not value or value == "auto":
        return None
    if value != "fp32":
        raise RuntimeUnavailable(f"{PIN_ENV}={value!r}: only fp32 (or auto) may pin auto's precision")
    return value


#: The attribute of a module that says in which runtimes ``auto`` may run it in bf16: a tuple of
#: runtime names whose bf16 outputs its owner's tests found within their accuracy gates. A module
#: without it is never run in bf16 by ``auto`` (asked for explicitly, ``--precision bf16`` is).
BF16_ATTRIBUTE = "bf16_runtimes"


def bf16_runtimes(module) -> tuple[str, ...] | None:
    """The runtimes a module's bf16 accuracy is tested in (None: not declared)."""
    value = getattr(module, BF16_ATTRIBUTE, None)
    return None if value is None else tuple(value)


def candidates(
    runtime: str, precision: str, available: Mapping[str, str | None], bf16_tested: Sequence[str] | None = None
) -> list[Candidate]:
    """The (runtime, precision) pairs ``auto`` chooses from on this CPU, best guess first.

    ``runtime``/``precision``: as asked (``auto`` or a name); ``available``: runtime -> None if
    it runs on the CPU here, else why not; ``bf16_tested``: with precision ``auto``, the
    runtimes whose bf16 is tested for this module (None: any, for a caller that asks for no
    gate). bf16 is offered only where the CPU has it in hardware. torch fp32 is left out when
    ONNX Runtime is there (never faster on the CPU: 31.7 vs 37.6 faces/s for VGG-16, issue 13).
    """
    from engines.cpuinfo import detect

    bf16 = detect().bf16_unavailable() is None
    precisions = ["bf16", "fp32"] if precision == "auto" else [precision]
    if not bf16:
        precisions = [p for p in precisions if p != "bf16"]
    runtimes = ["openvino", "torch", "onnxruntime"] if runtime == "auto" else [runtime]
    runs = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16"), "torch": ("fp32", "bf16")}
    found = []
    for p in precisions:
        for r in runtimes:
            if available.get(r) is not None or p not in runs[r]:
                continue
            if p == "bf16" and precision == "auto" and bf16_tested is not None and r not in bf16_tested:
                continue
            if runtime == "auto" and r == "torch" and p == "fp32" and available.get("onnxruntime") is None:
                continue
            found.append((r, p))
    return found


def tune_inputs(
    example_inputs: Sequence, input_names: Sequence[str], dynamic_axes: Mapping | None, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Inputs shaped like the examples, with named dynamic axes at :data:`TUNE_SIZES`."""
    rng = np.random.default_rng(seed)
    out = []
    for name, x in zip(input_names, example_inputs, strict=True):
        shape = list(x.shape)
        spec = (dynamic_axes or {}).get(name, {})
        for axis, axis_name in spec.items() if isinstance(spec, Mapping) else ():
            if axis_name in TUNE_SIZES:
                shape[axis % len(shape)] = TUNE_SIZES[axis_name]
        array = x.detach().cpu().numpy()
        if np.issubdtype(array.dtype, np.floating):
            out.append(rng.standard_normal(shape).astype(array.dtype))
        else:
            out.append(np.zeros(shape, array.dtype))
    return tuple(out)


def time_engine(engine: Engine, inputs: tuple[np.ndarray, ...], best: float | None) -> list[float]:
    """Seconds per call after a warm-up (first calls build kernels: oneDNN's primitives,
    OpenVINO's shape-specific code): one run alone if it is already hopeless against ``best``,
    else :data:`REPEATS` runs."""
    engine(*inputs)
    runs: list[float] = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        engine(*inputs)
        runs.append(time.perf_counter() - t0)
        if best is not None and runs[0] > HOPELESS * best:
            break
    return runs


def decision_path(folder: Path, fields: Mapping) -> Path:
    from engines.engine_cache import entry_key

    return Path(folder) / f"{entry_key(fields)}.json"


def read_decision(path: Path, fields: Mapping) -> Candidate | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("fields") != json.loads(json.dumps(fields)):
        return None
    choice = stored.get("choice")
    return (choice[0], choice[1]) if isinstance(choice, list) and len(choice) == 2 else None


def choose(
    name: str,
    options: list[Candidate],
    make: Callable[[str, str], Engine],
    inputs: tuple[np.ndarray, ...],
    fields: Mapping,
    folder: Path,
) -> Engine:
    """The engine of the fastest of ``options`` (``make(runtime, precision)`` compiles one),
    from the stored decision for ``fields`` if there is one, else measured now and stored."""
    path = decision_path(folder, fields)
    stored = read_decision(path, fields)
    if stored in options:
        log.debug("auto for %s: %s %s (stored decision %s)", name, *stored, path.name)
        return make(*stored)
    timings: dict[str, dict] = {}
    best_engine: Engine | None = None
    best_s: float | None = None
    best: Candidate | None = None
    for runtime, precision in options:
        label = f"{runtime} {precision}"
        try:
            engine = make(runtime, precision)
            runs = time_engine(engine, inputs, best_s)
        except RuntimeUnavailable as exc:
            timings[label] = {"error": str(exc)}
            continue
        median = statistics.median(runs)
        timings[label] = {"median_s": round(median, 6), "runs_s": [round(r, 6) for r in runs]}
        if best_s is None or median < best_s:
            best_engine, best_s, best = engine, median, (runtime, precision)
        else:
            del engine
    if best_engine is None:
        raise RuntimeUnavailable(f"auto for {name}: no candidate runs here: " + "; ".join(
            f"{k}: {v['error']}" for k, v in timings.items()))  # fmt: skip
    shapes = [list(x.shape) for x in inputs]
    record = {"name": name, "fields": fields, "choice": list(best), "timings": timings, "shapes": shapes,
              "created": time.time()}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    summary = ", ".join(f"{k} {v['median_s'] * 1e3:.0f} ms" for k, v in timings.items() if "median_s" in v)
    log.info("auto for %s on this CPU: %s %s (%s at %s)", name, *best, summary, shapes)
    return best_engine
