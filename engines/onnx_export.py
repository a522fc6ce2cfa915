"""torch module -> ONNX file, with the TorchScript-based exporter at a fixed opset."""

from __future__ import annotations

import collections
import copy
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

#: ONNX opset of every exported graph. 17 is the TorchScript exporter's well-trodden opset; it
#: has the GRU op (a 2-layer nn.GRU becomes two GRU ops, no Loop), which TensorRT's ONNX parser
#: and ONNX Runtime both run natively.
OPSET = 17

DynamicAxes = Mapping[str, Mapping[int, str] | Sequence[int]]


class CastPrecision(torch.nn.Module):
    """A copy of ``module`` in ``dtype``, with float32 inputs and outputs: a reduced-precision graph.

    For TensorRT 11, which dropped the FP16 builder flag: its networks are strongly typed, so the
    precision has to be in the ONNX graph itself. The caller's module is left as it is. Only
    float16 is useful at opset 17 (its Conv, GRU and ConstantOfShape do not take bfloat16).
    """

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = copy.deepcopy(module).to(dtype).eval()
        self.dtype = dtype

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"

    def forward(self, *inputs: torch.Tensor):
        out = self.module(*(x.to(self.dtype) if x.is_floating_point() else x for x in inputs))
        return _to_float32(out)


def _to_float32(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    return tuple(_to_float32(o) for o in out)


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: DynamicAxes | None = None,
) -> Path:
    """Write ``module`` (in eval mode) as an ONNX graph to ``path``.

    ``dynamo=False``: the dynamo exporter needs ``onnxscript`` and a newer opset; the TorchScript
    one is what the GRU-as-one-op property was checked with (torch 2.13-2.14). Its deprecation
    warning is silenced here, not elsewhere.
    """
    module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    example_inputs = tuple(t.to(device) for t in example_inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Emitted for every RNN whatever its inputs; whether the graph runs at other batch sizes
        # is for the caller's parity tests to show (affbatch's run batch 1 and 3).
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) if isinstance(v, Mapping) else list(v) for k, v in (dynamic_axes or {}).items()},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return path


def onnx_ops(path: Path) -> collections.Counter[str]:
    """How many nodes of each op type the graph at ``path`` holds (subgraphs included)."""
    import onnx

    counts: collections.Counter[str] = collections.Counter()

    def walk(graph) -> None:
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(onnx.load(str(path), load_external_data=False).graph)
    return counts
