"""torch itself: the module in eval mode under ``torch.inference_mode``.

On CUDA: fp16/bf16 by autocast (torch keeps softmax, reductions and the like in float32),
channels-last tensors for convolutional models (cuDNN's tensor-core kernels are NHWC), and
optionally one CUDA graph per input shape. ``torch.compile`` is not used: its first call takes
tens of seconds per shape and the shapes here vary (faces per batch, track lengths).
On the CPU: float32, or bf16 by autocast where the CPU multiplies bf16 in hardware (AMX,
AVX512-BF16: ``engines.cpuinfo``), with channels-last tensors (oneDNN's bf16 convolutions are
NHWC: 109.5 vs 18.7 faces/s for VGG-16 on a 2-core Xeon with AMX). Elsewhere bf16 is emulated,
hundreds of times slower, and refused; fp16 on the CPU is refused everywhere.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence

import torch

from engines.base import Engine, EngineError, EngineOptions, RuntimeUnavailable

_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: CUDA graphs kept per engine (each holds its own memory pool): the shapes a run repeats most.
MAX_GRAPHS = 8


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for item in out for t in _flatten(item)]
    raise EngineError(f"module returned {type(out).__name__}; engines handle tensors and (nested) tuples of them")


def check_precision(precision: str, device: str) -> None:
    if precision == "fp32":
        return
    if device == "cpu":
        from engines.cpuinfo import detect

        if precision != "bf16":
            raise RuntimeUnavailable(f"torch on the CPU runs fp32 or bf16, not {precision}")
        if why := detect().bf16_unavailable():
            raise RuntimeUnavailable(f"bf16: {why}; use fp32")
        return
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise RuntimeUnavailable(f"{torch.cuda.get_device_name(device)} has no bf16 arithmetic; use fp16")


class TorchEngine(Engine):
    """Runs ``module`` as is (moved to ``device``, put in eval mode: the caller's module itself)."""

    runtime = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        input_names: Sequence[str],
        output_names: Sequence[str],
        device: str,
        precision: str = "fp32",
        options: EngineOptions | None = None,
    ):
        options = options or EngineOptions()
        check_precision(precision, device)
        self.module = module.to(device).eval()
        self.device, self.precision = device, precision
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)
        has_conv = any(isinstance(m, torch.nn.Conv2d) for m in self.module.modules())
        wanted = options.channels_last
        if wanted is None:  # NHWC where the fast kernels are: cuDNN, and oneDNN's bf16 on the CPU
            wanted = device != "cpu" or precision == "bf16"
        self.channels_last = bool(wanted and has_conv)
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.cuda_graphs = bool(options.cuda_graphs and device != "cpu")
        self._graphs: OrderedDict = OrderedDict()

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        dtype = _AUTOCAST.get(self.precision)
        kind = "cpu" if self.device == "cpu" else "cuda"
        with torch.autocast(kind, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            outputs = _flatten(self.module(*xs))
        if len(outputs) != len(self.output_names):
            raise EngineError(f"module returned {len(outputs)} outputs, output_names has {len(self.output_names)}")
        return [t.float() if t.is_floating_point() and t.dtype != torch.float32 else t for t in outputs]

    def run_torch(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.inference_mode():
            xs = [self._prepare(x) for x in inputs]
            if self.cuda_graphs:
                return self._replay(xs)
            return self._forward(xs)

    def _replay(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Capture a CUDA graph the first time a shape is seen, then replay it: one launch
        instead of one per kernel. Outputs are copied out of the graph's static buffers."""
        key = tuple((tuple(x.shape), x.dtype, x.stride()) for x in xs)
        entry = self._graphs.get(key)
        if entry is None:
            static = [x.clone() for x in xs]
            current = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):  # warm up outside the capture (cuDNN picks its algorithms)
                for _ in range(2):
                    self._forward(static)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self._forward(static)
            entry = self._graphs[key] = (graph, static, outputs)
            if len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        graph, static, outputs = entry
        for s, x in zip(static, xs, strict=True):
            s.copy_(x)
        graph.replay()
        return [o.clone() for o in outputs]
