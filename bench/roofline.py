"""The compute floor: the machine's fp32 matrix-multiply rate and each model's FLOPs per frame.

FLOPs are counted, not guessed: the model runs once under ``torch.utils.flop_counter``'s
``FlopCounterMode``, which adds up the matrix products and convolutions the ATen operators
actually perform (2 FLOPs per multiply-add; ``nn.GRU`` decomposes into the ``addmm`` calls of its
gates). Element-wise work (activations, normalisation, pooling, softmax, resizing) is not counted:
it is memory-bound and small next to the products. The floor of a model is
``matmul GFLOP/s / GFLOPs per frame``: how many frames per second the machine could compute if
every FLOP ran at the speed of one large ``torch.mm``. Real throughput is a fraction of it.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from affbatch.crops import CROP_SIZE


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one ``module(*inputs)`` call (matrix products and convolutions, 2 per multiply-add)."""
    param = next(module.parameters(), None)
    if param is not None:  # a model already placed on a GPU counts there
        inputs = tuple(x.to(param.device) for x in inputs)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def matmul_gflops(size: int = 2048, repeats: int = 10) -> dict:
    """fp32 ``torch.mm`` of two ``size`` x ``size`` matrices: GFLOP/s, median and spread (the
    best run is the estimate of the machine's rate when other work shares it)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    flops = 2 * size**3
    torch.mm(a, b)  # warm-up: thread pool, page faults
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(flops / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    return {
        "gflops_median": statistics.median(rates),
        "gflops_min": rates[0],
        "gflops_max": rates[-1],
        "size": size,
        "runs": repeats,
        "threads": torch.get_num_threads(),
    }


def detector_flops(network: nn.Module, height: int, width: int, max_side: int) -> int:
    """FLOPs of RetinaFace's ``network`` on one frame of ``height`` x ``width`` source pixels, at
    the input size ``FaceDetector`` gives it (the longer side shrunk to ``max_side``)."""
    from affbatch.models.detector import network_size

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
    """Frames/s at the matrix-multiply rate: the compute floor of the work per frame."""
    return gflops_per_s * 1e9 / flops_per_frame if flops_per_frame > 0 else float("inf")
