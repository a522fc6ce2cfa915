"""``engines.compile``: resolve device, runtime and precision, export (through the cache), open the engine.

``auto`` (DESIGN.md): TensorRT when it imports and a GPU is present, else torch on CUDA. On the
CPU: where the CPU multiplies bf16 in hardware (``engines.cpuinfo``), each model gets the
fastest runtime x precision measured here (``engines.autotune``: OpenVINO or torch in bf16,
ONNX Runtime or OpenVINO in fp32); elsewhere ONNX Runtime in fp32 (torch if ONNX Runtime is
missing). Each choice that falls back is logged once per process: at WARNING when something
faster was wanted (a GPU without TensorRT), at INFO otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from engines.base import Engine, EngineError, EngineOptions, RuntimeUnavailable
from engines.onnx_export import DynamicAxes
from engines.placement import Placement, check_device, check_precision, check_runtime

log = logging.getLogger("engines")

_said: set[str] = set()


def _once(level: int, message: str, *args: object) -> None:
    text = message % args
    if text not in _said:
        _said.add(text)
        log.log(level, "%s", text)


def cuda_unavailable() -> str | None:
    """None when torch sees a CUDA device, else why not."""
    if torch.version.cuda is None:
        return f"no device (torch {torch.__version__} is a CPU-only build)"
    if not torch.cuda.is_available():
        return "no device (torch sees none: no NVIDIA GPU or driver here)"
    return None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:0`` when torch sees a GPU, else ``cpu``; ``cuda`` -> ``cuda:0``; checked."""
    check_device(device)
    if device == "auto":
        why = cuda_unavailable()
        if why is None:
            return "cuda:0"
        _once(logging.INFO, "device auto: cpu (cuda: %s)", why)
        return "cpu"
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if (why := cuda_unavailable()) is not None:
            raise RuntimeUnavailable(f"device {device}: cuda: {why}; use --device cpu")
        if index >= torch.cuda.device_count():
            raise RuntimeUnavailable(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        return f"cuda:{index}"
    return "cpu"


def resolve_runtime(runtime: str, device: str) -> str:
    """The runtime for an already resolved ``device``; RuntimeUnavailable says why one cannot run."""
    from engines.onnxruntime_engine import available as onnxruntime_unavailable
    from engines.openvino_engine import available as openvino_unavailable
    from engines.tensorrt_engine import available as tensorrt_unavailable

    check_runtime(runtime)
    if runtime == "openvino":
        if why := openvino_unavailable():
            raise RuntimeUnavailable(f"openvino: {why}")
        if device != "cpu":
            raise RuntimeUnavailable("openvino: runs on the CPU here, not on CUDA devices; use --device cpu")
        return runtime
    if runtime == "tensorrt":
        if why := tensorrt_unavailable():
            raise RuntimeUnavailable(f"tensorrt: {why}")
        if device == "cpu":
            raise RuntimeUnavailable("tensorrt: runs on CUDA devices only, not the CPU; use --device cuda")
        return runtime
    if runtime == "onnxruntime":
        if why := onnxruntime_unavailable():
            raise RuntimeUnavailable(f"onnxruntime: {why}")
        import onnxruntime

        if device != "cpu" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise RuntimeUnavailable(
                f"onnxruntime: no CUDA provider in this build (it runs on the CPU); on {device} use --runtime torch"
            )
    if runtime != "auto":
        return runtime
    if device == "cpu":
        if (why := onnxruntime_unavailable()) is None:
            return "onnxruntime"
        _once(logging.WARNING, "runtime auto: onnxruntime: %s; using torch on the CPU", why)
        return "torch"
    if (why := tensorrt_unavailable()) is None:
        _once(logging.INFO, "runtime auto: tensorrt on %s", device)
        return "tensorrt"
    _once(logging.WARNING, "runtime auto: tensorrt: %s; using torch on %s", why, device)
    return "torch"


def cpu_runtimes() -> dict[str, str | None]:
    """For each runtime: None when it runs on the CPU here, else why not."""
    from engines.onnxruntime_engine import available as onnxruntime_unavailable
    from engines.openvino_engine import available as openvino_unavailable

    return {"onnxruntime": onnxruntime_unavailable(), "openvino": openvino_unavailable(), "torch": None}


def resolve_precision(precision: str, runtime: str, device: str) -> str:
    """On CUDA, ``auto`` is float32 (the precision every runtime is checked against) and a
    precision asked for is passed on (the runtime says no when it cannot run it).

    On the CPU: ``auto`` stays ``auto`` (each model then gets its fastest runtime x precision,
    :mod:`engines.autotune`) where the CPU has bf16 in hardware and more than one candidate
    can run, else it is fp32; bf16 without it, and fp16, are refused with the reason.
    """
    from engines.autotune import candidates, pinned_precision

    check_precision(precision)
    if device != "cpu":
        return "fp32" if precision == "auto" else precision
    if precision == "fp16":
        raise RuntimeUnavailable(
            "fp16 on the CPU: no runtime here computes in it faster than bf16 or fp32; use --precision bf16 or fp32"
        )
    if precision == "bf16":
        from engines.cpuinfo import detect

        if runtime == "onnxruntime":
            raise RuntimeUnavailable(
                "onnxruntime runs fp32 here, not bf16; for bf16 use --runtime openvino, torch or auto"
            )
        if why := detect().bf16_unavailable():
            raise RuntimeUnavailable(f"--precision bf16: {why}; use fp32")
        return precision
    if precision == "auto":
        from engines.cpuinfo import detect

        # Without bf16 in hardware, fp32 as before: ONNX Runtime is its fastest runtime here.
        if pinned_precision() is not None or detect().bf16_unavailable():
            return "fp32"
        return "auto" if len(candidates(runtime, "auto", cpu_runtimes())) > 1 else "fp32"
    return precision


def resolve(runtime: str = "auto", device: str = "auto", precision: str = "auto") -> Placement:
    """The placement of a run. On the CPU, runtime ``auto`` with precision ``auto`` or ``bf16``
    where bf16 runs in hardware stays ``auto``: chosen per model when it is compiled."""
    device = resolve_device(device)
    check_runtime(runtime)
    precision = resolve_precision(precision, runtime, device)
    if device == "cpu" and runtime == "auto" and precision != "fp32":
        resolve_runtime("auto", device)  # a CPU with no runtime at all says so here
        return Placement("auto", device, precision)
    runtime = resolve_runtime(runtime, device)
    return Placement(runtime, device, precision)


def compile_module(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: DynamicAxes | None = None,
    runtime: str = "auto",
    device: str = "cpu",
    cache_dir: Path | None = None,
    cache_extra: str = "",
    precision: str = "fp32",
    options: EngineOptions | None = None,
) -> Engine:
    options = options or EngineOptions()
    placement = resolve(runtime, device, precision)
    example_inputs = tuple(t.detach().cpu() for t in example_inputs)
    args = (module, example_inputs, input_names, output_names, dynamic_axes, cache_dir, cache_extra, options)
    if placement.device == "cpu" and "auto" in (placement.runtime, placement.precision):
        return _autotuned(placement, *args)
    return _compile(placement.runtime, placement.device, placement.precision, *args)


def _compile(
    runtime, device, precision, module, example_inputs, input_names, output_names, dynamic_axes, cache_dir, cache_extra,
    options,
) -> Engine:  # fmt: skip
    if runtime == "torch":
        from engines.torch_engine import TorchEngine

        return TorchEngine(module, input_names, output_names, device, precision, options)
    if runtime == "tensorrt":
        return _tensorrt(
            module, example_inputs, input_names, output_names, dynamic_axes, device, precision, cache_dir, cache_extra,
            options,
        )  # fmt: skip
    from engines.cache import cache_root, cached_onnx

    if runtime == "openvino":
        from engines.openvino_engine import OpenVinoEngine, check_precision

        check_precision(precision, device)  # before exporting: say no at once
        path = cached_onnx(module, example_inputs, input_names, output_names, dynamic_axes, cache_dir, cache_extra)
        return OpenVinoEngine(path, input_names, output_names, device, precision, cache_root() / "openvino")
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    if precision != "fp32":  # before exporting: say no at once
        raise RuntimeUnavailable(
            f"onnxruntime runs fp32 here, not {precision}; use --runtime openvino or torch (CPU), tensorrt (CUDA)"
        )
    path = cached_onnx(module, example_inputs, input_names, output_names, dynamic_axes, cache_dir, cache_extra)
    return OnnxRuntimeEngine(path, input_names, output_names, device, precision)


def _autotuned(
    placement, module, example_inputs, input_names, output_names, dynamic_axes, cache_dir, cache_extra, options
) -> Engine:
    """The fastest candidate for this module on this CPU (:mod:`engines.autotune`)."""
    from engines import autotune
    from engines.cache import cache_root, cached_onnx, onnx_sha256
    from engines.cpuinfo import cores, detect

    tested = autotune.bf16_runtimes(module) if placement.precision == "auto" else None
    options_list = autotune.candidates(placement.runtime, placement.precision, cpu_runtimes(), tested or ())
    args = (module, example_inputs, input_names, output_names, dynamic_axes, cache_dir, cache_extra, options)
    if len(options_list) == 1:
        return _compile(options_list[0][0], "cpu", options_list[0][1], *args)
    if not options_list:
        raise RuntimeUnavailable(f"no runtime runs {placement.precision} on this CPU")
    graph = cached_onnx(module, example_inputs, input_names, output_names, dynamic_axes, cache_dir, cache_extra)
    inputs = autotune.tune_inputs(example_inputs, input_names, dynamic_axes)
    cpu = detect()
    fields = {
        "onnx_sha256": onnx_sha256(graph),
        "candidates": [list(c) for c in options_list],
        "shapes": [list(x.shape) for x in inputs],
        "cpu": cpu.model,
        "features": cpu.features,
        "cores": cores(),
        "versions": _versions(),
    }
    return autotune.choose(
        type(module).__name__, options_list, lambda r, p: _compile(r, "cpu", p, *args), inputs, fields,
        cache_root() / "autotune",
    )  # fmt: skip


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    out: dict[str, str | None] = {"torch": torch.__version__}
    for dist in ("onnxruntime", "openvino"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _tensorrt(
    module, example_inputs, input_names, output_names, dynamic_axes, device, precision, cache_dir, cache_extra, options
) -> Engine:
    from engines import tensorrt_engine as te
    from engines.cache import cache_root, cached_onnx, onnx_sha256
    from engines.engine_cache import load_or_build
    from engines.onnx_export import CastPrecision
    from engines.profiles import make_profile, split_axis
    from engines.tensorrt_ops import check_graph

    dtype = te.graph_dtype(precision)
    exported, extra = module, cache_extra
    if dtype is not None:
        exported, extra = CastPrecision(module, dtype), f"{cache_extra}|graph {dtype}"
    path = cached_onnx(exported, example_inputs, input_names, output_names, dynamic_axes, cache_dir, extra)
    if problems := check_graph(path):
        raise EngineError(f"{type(module).__name__}: TensorRT cannot take its ONNX graph: " + "; ".join(problems[:5]))
    profile = make_profile(input_names, [tuple(t.shape) for t in example_inputs], dynamic_axes, options.profiles)
    fields = te.key_fields(onnx_sha256(path), device, precision, profile, options, input_names, output_names)
    folder = Path(options.engine_dir) if options.engine_dir is not None else cache_root() / "tensorrt"
    timing = te.timing_cache_path(folder, fields) if options.timing_cache else None

    def build() -> bytes:
        log.info("building a TensorRT engine for %s (%s); this takes a while once", type(module).__name__, precision)
        return te.build_plan(path, profile, precision, device, options, timing)

    split = split_axis(input_names, output_names, dynamic_axes)
    plan, built = load_or_build(folder, fields, build)
    try:
        return te.TensorRTEngine(plan, input_names, output_names, device, precision, profile, split)
    except te.DeserializeError:
        if built:
            raise
        log.warning("cached TensorRT engine for %s did not deserialize: building it again", type(module).__name__)
        plan, _ = load_or_build(folder, fields, build, force=True)
        return te.TensorRTEngine(plan, input_names, output_names, device, precision, profile, split)
