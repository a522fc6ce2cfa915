"""What TensorRT's ONNX parser accepts, and a check of an exported graph against it (runs on CPU).

Source: ONNX-TensorRT's support matrix, ``docs/operators.md`` of github.com/onnx/onnx-tensorrt,
the version for TensorRT 10.15 ("TensorRT 10.15 supports operators in the inclusive range of
opset 9 to opset 24"), read 2026-11. Our graphs are exported at opset 17
(:data:`engines.onnx_export.OPSET`). TensorRT 11's parser documents the same list (its ONNX opset
guide points to that file) with a maximum opset of 25. Only the rows marked "Y" are here; the
restrictions listed there that our exporters can run into are checked by :func:`check_graph`.
"""

from __future__ import annotations

from pathlib import Path

SOURCE = "onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15 (opsets 9-24), read 2026-11"
OPSET_RANGE = (9, 24)

#: Operators TensorRT's ONNX parser supports (rows marked "Y" in the source above).
SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
    BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape
    Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum
    Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
    GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
    GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
    ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
    LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
    RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
    Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile
    TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)

# "`axes` must be an initializer" (Reduce*), "resolvable to a constant" (Squeeze, Unsqueeze);
# Slice's axes were "an initializer" up to TensorRT 8.6: kept, since ours are constants anyway.
_CONSTANT_INPUTS = {
    "Squeeze": 1,
    "Unsqueeze": 1,
    "Slice": 3,
    **{op: 1 for op in SUPPORTED_OPS if op.startswith("Reduce")},
}
_RESIZE = {
    "mode": {"nearest", "linear"},
    "coordinate_transformation_mode": {
        "half_pixel",
        "pytorch_half_pixel",
        "tf_half_pixel_for_nn",
        "asymmetric",
        "align_corners",
    },
    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
}


def _attrs(node) -> dict:
    import onnx

    values = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        values[a.name] = v.decode() if isinstance(v, bytes) else v
    return values


def _check_node(node, constants: set[str]) -> str | None:
    op, attrs = node.op_type, _attrs(node)
    if op not in SUPPORTED_OPS:
        return f"{op} is not supported by TensorRT's ONNX parser"
    index = _CONSTANT_INPUTS.get(op)
    if index is not None and len(node.input) > index and node.input[index] and node.input[index] not in constants:
        return f"{op} {node.name!r}: input {index} ({node.input[index]}) must be a constant"
    if op == "GRU":
        # The parser reads X as (seq, batch, features) and ignores `layout`; it also rejected `clip`.
        if attrs.get("layout", 0) != 0:
            return f"GRU {node.name!r}: layout {attrs['layout']} (TensorRT reads layout 0 only)"
        if "clip" in attrs:
            return f"GRU {node.name!r}: clip is not supported"
    if op in ("MaxPool", "AveragePool"):
        if len(attrs.get("kernel_shape", ())) not in (2, 3):
            return f"{op} {node.name!r}: 2D or 3D pooling only"
        if any(d != 1 for d in attrs.get("dilations", ())):
            return f"{op} {node.name!r}: dilations must be all ones"
        if op == "MaxPool" and len([o for o in node.output if o]) > 1:
            return f"MaxPool {node.name!r}: the Indices output is not supported"
    if op == "Resize":
        for name, allowed in _RESIZE.items():
            if name in attrs and attrs[name] not in allowed:
                return f"Resize {node.name!r}: {name} {attrs[name]!r} is not supported"
        if attrs.get("antialias", 0):
            return f"Resize {node.name!r}: antialiasing is not supported"
    return None


def check_graph(path: Path) -> list[str]:
    """Problems TensorRT's parser would have with the ONNX graph at ``path`` (empty: none known)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"opset {opset}: TensorRT's parser takes {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    for domain in {o.domain for o in model.opset_import} - {"", "ai.onnx"}:
        problems.append(f"custom op domain {domain!r} (TensorRT would need a plugin)")

    def walk(graph, outer: set[str]) -> None:
        constants = outer | {t.name for t in graph.initializer}
        constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        for node in graph.node:
            if (problem := _check_node(node, constants)) is not None:
                problems.append(problem)
            for attr in node.attribute:
                for g in [attr.g] if attr.g.node else list(attr.graphs):
                    walk(g, constants)

    walk(model.graph, set())
    return problems
