"""The compute floor: the machine's best dense-kernel rate (per precision) and each model's FLOPs per frame.

FLOPs are counted, not guessed: the model runs once under ``torch.utils.flop_counter``'s
``FlopCounterMode``, which adds up the matrix products and convolutions the ATen operators
actually perform (2 FLOPs per multiply-add; ``nn.GRU`` decomposes into the ``addmm`` calls of its
gates). Element-wise work (activations, normalisation, pooling, softmax, resizing) is not counted:
it is memory-bound and small next to the products. The floor of a model is
``peak GFLOP/s / GFLOPs per frame``: how many frames per second the machine could compute if
every FLOP ran at the best rate measured for a dense kernel. Real throughput is a fraction of it.

The peak is the best of several dense kernels (``peak_gflops``), in every precision the machine
offers (bf16 where the CPU has AMX or AVX512-BF16: the models may run in it), because no single
one is the fastest everywhere: a large ``torch.mm``, and on the CPU ONNX Runtime's own ``MatMul`` and a
3x3 ``Conv`` shaped like a middle layer of VGG-16 at 96x96 (MLAS's blocked NCHWc convolution can
beat both GEMMs on AVX-512 CPUs). Without that kernel, VGG-16 under ONNX Runtime measured above
100% of a ``torch.mm`` floor on a 2-core AMD EPYC (222 vs 178 GFLOP/s).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from affbatch.faces.crops import CROP_SIZE


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one ``module(*inputs)`` call (matrix products and convolutions, 2 per multiply-add)."""
    param = next(module.parameters(), None)
    if param is not None:  # a model already placed on a GPU counts there
        inputs = tuple(x.to(param.device) for x in inputs)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


MATMUL_SIZE = 2048  # large enough to be compute-bound, small enough for a second on 2 cores
# The 3x3 convolution of VGG-16's conv3 block at 96x96 input (24x24 maps, 256 -> 256 channels).
CONV_SHAPE = {"batch": 16, "channels": 256, "size": 24}
#: Convolutions chained (each + ReLU): inside a chain the runtimes keep their blocked layouts, as
#: inside a model; one convolution alone pays a layout reorder in and out. Measured on a 2-core
#: Xeon with AMX, OpenVINO bf16: 764 GFLOP/s for one, 1320 for 8 chained, while VGG-16 to fc6
#: reached 944 (so one convolution put VGG-16 at 116% of its "floor").
CONV_DEPTH = 8


def _rates(run, flops: int, repeats: int, sync=lambda: None) -> dict:
    run()  # warm-up: thread pool, page faults, kernel selection
    sync()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        sync()
        rates.append(flops / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    return {
        "gflops_median": statistics.median(rates),
        "gflops_min": rates[0],
        "gflops_max": rates[-1],
        "runs": repeats,
    }


def matmul_gflops(size: int = MATMUL_SIZE, repeats: int = 10, device: str = "cpu") -> dict:
    """fp32 ``torch.mm`` of two ``size`` x ``size`` matrices: GFLOP/s, median and spread (the
    best run is the estimate of the machine's rate when other work shares it)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    # fp32 on a GPU too: TF32 would multiply at a precision the models do not run at.
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        result = _rates(lambda: torch.mm(a, b), 2 * size**3, repeats, sync)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return {**result, "kernel": f"torch.mm {size}x{size}", "threads": torch.get_num_threads()}


def onnxruntime_gflops(repeats: int = 10) -> list[dict]:
    """GFLOP/s of ONNX Runtime's (CPU) ``MatMul`` of two 2048x2048 matrices and of a chain of
    VGG-style 3x3 ``Conv`` (``CONV_SHAPE``, padding 1, ``CONV_DEPTH`` deep), in sessions set up
    as ``engines`` sets them up."""
    import numpy as np

    from engines.onnxruntime_engine import session_options

    results = []
    for name, model, feed, flops in _kernel_graphs(np.random.default_rng(0)):
        session = onnxruntime_session(model, session_options())
        rates = _rates(lambda s=session, f=feed: s.run(None, f), flops, repeats)
        results.append({**rates, "kernel": f"onnxruntime {name}"})
    return results


def _kernel_graphs(rng) -> list[tuple[str, bytes, dict, int]]:
    """(name, ONNX model, inputs, FLOPs) of the two dense kernels: a 2048x2048 MatMul and
    a chain of ``CONV_DEPTH`` VGG-16 conv3 3x3 Convs with ReLUs (``CONV_SHAPE``, padding 1)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    def model(node, inputs, output, initializers=()):
        graph = helper.make_graph([node], "peak", inputs, [output], list(initializers))
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    def value(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    n = MATMUL_SIZE
    a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
    matmul = model(helper.make_node("MatMul", ["a", "b"], ["c"]), [value("a", [n, n]), value("b", [n, n])],
                   value("c", [n, n]))  # fmt: skip
    nb, c, s = CONV_SHAPE["batch"], CONV_SHAPE["channels"], CONV_SHAPE["size"]
    nodes, weights, previous = [], [], "x"
    for i in range(CONV_DEPTH):
        weights.append(onnx.numpy_helper.from_array(rng.standard_normal((c, c, 3, 3), np.float32) * 0.02, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous = f"r{i}"
    graph = helper.make_graph(nodes, "peak", [value("x", [nb, c, s, s])], [value(previous, [nb, c, s, s])], weights)
    conv = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = rng.standard_normal((nb, c, s, s), np.float32)
    return [
        (f"MatMul {n}x{n}", matmul, {"a": a, "b": b}, 2 * n**3),
        (f"Conv 3x3 {c}->{c} at {s}x{s}, batch {nb}, {CONV_DEPTH} deep", conv, {"x": x},
         CONV_DEPTH * 2 * nb * c * c * 9 * s * s),
    ]  # fmt: skip


def openvino_gflops(precision: str, repeats: int = 10) -> list[dict]:
    """GFLOP/s of OpenVINO's MatMul and Conv (as :func:`onnxruntime_gflops`) in ``precision``,
    compiled as ``engines`` compiles models (``engines.openvino_engine.config``)."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import openvino as ov

    from engines.cpuinfo import cores
    from engines.openvino_engine import config

    core = ov.Core()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, feed, flops in _kernel_graphs(np.random.default_rng(0)):
            path = Path(tmp) / "kernel.onnx"
            path.write_bytes(model)
            request = core.compile_model(str(path), "CPU", config(precision, cores())).create_infer_request()
            rates = _rates(lambda r=request, f=feed: r.infer(f, share_inputs=True), flops, repeats)
            results.append({**rates, "kernel": f"openvino {precision} {name}", "precision": precision})
    return results


def bf16_matmul_gflops(size: int = MATMUL_SIZE, repeats: int = 10) -> dict:
    """bf16 ``torch.mm`` on the CPU (oneDNN: AMX / AVX512-BF16 where the CPU has them)."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    result = _rates(lambda: torch.mm(a, b), 2 * size**3, repeats)
    return {**result, "kernel": f"torch.mm bf16 {size}x{size}", "precision": "bf16", "threads": torch.get_num_threads()}


def onnxruntime_session(model: bytes, options):
    import onnxruntime

    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def peak_gflops(device: str = "cpu", repeats: int = 10) -> dict:
    """The machine's best measured rate over the dense kernels it runs the models with, in every
    precision it offers: ``{"gflops": best of all kernels' best runs, "kernel": which,
    "per_precision": {precision: best rate}, "kernels": [each kernel's figures]}``.

    fp32: ``torch.mm`` and ONNX Runtime's MatMul and Conv; where the CPU has bf16 in hardware
    (``engines.cpuinfo``), bf16 too: ``torch.mm`` and OpenVINO's MatMul and Conv (a model run in
    bf16 can beat every fp32 kernel, so an fp32-only ceiling would put it above 100% of its
    floor). On a GPU, fp32 ``torch.mm`` there (the ONNX Runtime build here is CPU-only)."""
    kernels = [{**matmul_gflops(repeats=repeats, device=device), "precision": "fp32"}]
    if not device.startswith("cuda"):
        kernels += [{**k, "precision": "fp32"} for k in onnxruntime_gflops(repeats)]
        from engines.cpuinfo import detect

        if detect().bf16_unavailable() is None:
            kernels.append(bf16_matmul_gflops(repeats=repeats))
            from engines.openvino_engine import available

            if available() is None:
                kernels += openvino_gflops("bf16", repeats)
    best = max(kernels, key=lambda k: k["gflops_max"])
    per_precision: dict[str, float] = {}
    for k in kernels:
        per_precision[k["precision"]] = max(per_precision.get(k["precision"], 0.0), k["gflops_max"])
    return {"gflops": best["gflops_max"], "kernel": best["kernel"], "per_precision": per_precision, "kernels": kernels}


def detector_flops(network: nn.Module, height: int, width: int, max_side: int) -> int:
    """FLOPs of RetinaFace's ``network`` on one frame of ``height`` x ``width`` source pixels, at
    the input size ``FaceDetector`` gives it (the longer side shrunk to ``max_side``)."""
    from affbatch.faces.detector import network_size

    h, w = network_size(height, width, max_side)
    return count_flops(network.eval(), torch.zeros(1, 3, h, w))


def crop_flops(module: nn.Module) -> int:
    """FLOPs of a per-face module on one 96x96 crop."""
    return count_flops(module.eval(), torch.zeros(1, 3, CROP_SIZE, CROP_SIZE))


def temporal_flops_per_frame(temporal: nn.Module, features: int, window: int, warmup: int) -> float:
    """FLOPs of the recurrent part per output frame in a long track: windows of ``window``
    positions every ``window - warmup`` frames (the overlap runs twice)."""
    flops = count_flops(temporal.eval(), torch.zeros(1, window, features))
    return flops / (window - warmup)


def floor_fps(gflops_per_s: float, flops_per_frame: float) -> float:
    """Frames/s at the peak dense rate: the compute floor of the work per frame."""
    return gflops_per_s * 1e9 / flops_per_frame if flops_per_frame > 0 else float("inf")
