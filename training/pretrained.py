"""Pretrained backbones from the files users have (nothing is downloaded).

    cnn = load_backbone("vggface", "vgg_face_dag.pth")                  # -> VGGFaceFC6, folded
    info = load_into(model, "vggface2-resnet50", "resnet50_ft_dag.pth")  # into model.cnn

Kinds, the files each reads (their layouts), and the input the network was trained on:

* ``vggface`` (VGG-Face, Parkhi et al. 2015):
  - ``vgg_face_dag.pth``, Albanie's PyTorch conversion (pytorch-mcn): keys ``conv1_1.weight``
    ... ``conv5_3.bias``, ``fc6``, ``fc7``, ``fc8``; RGB 0-255 minus (129.186, 104.762, 93.594).
  - keras-vggface's ``rcmalli_vggface_tf_vgg16.h5`` (or ``..._notop_vgg16.h5`` for ``feed="pool"``):
    Keras 2 h5, ``[model_weights/]<layer>/<layer>/kernel:0`` and ``bias:0``, channels-last;
    BGR 0-255 minus (93.5940, 104.7624, 129.1863).
* ``vggface2-resnet50`` (Cao et al. 2018; the ``caffe`` ResNet variant, as their Caffe originals):
  - ``resnet50_ft_dag.pth`` / ``resnet50_scratch_dag.pth``, Albanie's conversion: keys
    ``conv1_7x7_s2``, ``conv2_1_1x1_reduce(_bn)``, ``..._3x3``, ``..._1x1_increase``,
    ``..._1x1_proj``, ``classifier``; RGB 0-255 minus (131.0912, 103.8827, 91.4953).
  - ``resnet50_ft_weight.pkl`` / ``resnet50_scratch_weight.pkl``, cydonia999/VGGFace2-pytorch: a
    (Python 2) pickle of numpy arrays under torchvision's names, or a ``.pth`` state dict with
    those names; BGR 0-255 minus (91.4953, 103.8827, 131.0912).
* ``imagenet-densenet121``: torchvision's ``densenet121-a639ec97.pth`` (its old ``norm.1`` keys
  remapped as torchvision does); RGB [0, 1] minus (0.485, 0.456, 0.406) over (0.229, 0.224, 0.225).
* ``imagenet-resnet50``: torchvision's ``resnet50-*.pth`` (the ``pytorch`` variant); as DenseNet-121.

Classifier layers (fc7, fc8, fc, classifier) are dropped. ``.pth`` files are read with
``torch.load(weights_only=True)`` only. The ``.pkl`` files are pickles: read only with
``allow_pickle=True``, and then by an unpickler that builds numpy arrays and nothing else (any
other object in the file is refused); :func:`save_backbone` writes the result as safetensors
once, which ``load_backbone`` reads back without pickle.

**Input normalisation, folded into the first convolution.** Our crops are RGB in [-1, 1]; a
pixel p in 0-255 is ``x = p / 127.5 - 1``. A network trained on ``z_c = (p_{o(c)} * r / 255 -
mean_c) / std_c`` (o: its channel order, r: 255 or 1) sees ``z_c = a_c x_{o(c)} + b_c`` with
``a_c = r / (2 std_c)`` and ``b_c = (r / 2 - mean_c) / std_c``. So the first convolution's input
channel o(c) gets the weights ``W[:, c] * a_c`` (reordered: BGR networks' channels flip), and its
output the constant ``sum_{c, taps} W[:, c] * b_c``: added to the bias (VGG) or, where a batch
norm follows a bias-free convolution (ResNet, DenseNet), subtracted from its running mean. This
is exact wherever the convolution's window lies inside the image. At the border, the zero
padding that stood for the dataset's mean colour (zero after mean subtraction) now stands for
mid-grey (``x = 0``): the one difference a fold into weights cannot remove (it would need a
per-channel padding value). The tests check both statements (to float32 rounding).

**fc6 at 96x96** (VGG-Face): fc6 was trained on the 7x7x512 pool5 map of a 224x224 input; at
96x96 the map is 3x3. Its weights become :func:`~affbatch.models.vggface_gru_attn.fc6_weight_from_224`'s:
the 224-pixel fc6 applied to the 3x3 map upsampled to 7x7 by nearest neighbour, folded exactly
into a 3x3 fc6 (a uniform map gives the fc6 response it gave at 224). Keras stores fc6 for a
channels-last flatten (h, w, c); it is reordered to torch's (c, h, w) first.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from affbatch.files import file_sha256
from affbatch.models import backbones as bb
from affbatch.models import vggface_gru_attn as vga


class PretrainedError(ValueError):
    """A pretrained-weights file that is missing, unreadable, or not in a layout this module reads."""


@dataclass(frozen=True)
class InputNorm:
    """What a network's first layer expects: channel order, pixel range (255 or 1), mean, std (its order)."""

    order: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


VGGFACE_RGB = InputNorm("RGB", 255.0, (129.186279296875, 104.76238250732422, 93.59396362304688))
VGGFACE_BGR = InputNorm("BGR", 255.0, (93.5940, 104.7624, 129.1863))
VGGFACE2_RGB = InputNorm("RGB", 255.0, (131.0912, 103.8827, 91.4953))
VGGFACE2_BGR = InputNorm("BGR", 255.0, (91.4953, 103.8827, 131.0912))
IMAGENET = InputNorm("RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

KINDS = ("vggface", "vggface2-resnet50", "imagenet-densenet121", "imagenet-resnet50")
_LAYOUTS = {
    "vggface": "VGG-Face as vgg_face_dag.pth (keys conv1_1.weight ... fc6.weight) or keras-vggface .h5",
    "vggface2-resnet50": "VGGFace2 ResNet-50 as resnet50_ft_dag.pth (conv1_7x7_s2 ...), "
    "or cydonia999's resnet50_ft_weight.pkl / a .pth with its names (conv1.weight, layer1.0.conv1.weight ...)",
    "imagenet-densenet121": "torchvision's densenet121-a639ec97.pth (features.conv0.weight ...)",
    "imagenet-resnet50": "torchvision's resnet50-*.pth (conv1.weight, layer1.0.conv1.weight ...)",
}


def network_input(x: Tensor, norm: InputNorm) -> Tensor:
    """What a network with input ``norm`` is fed for our crops ``x`` (N, 3, H, W) RGB in [-1, 1]."""
    pixels = (x + 1) * 127.5 * (norm.scale / 255.0)
    if norm.order == "BGR":
        pixels = pixels.flip(1)
    return (pixels - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(norm.std).view(1, 3, 1, 1)


def fold_input_norm(weight: Tensor, norm: InputNorm) -> tuple[Tensor, Tensor]:
    """(weight for [-1, 1] RGB input, per-output-channel shift to add to its output); see above."""
    a = torch.tensor([norm.scale / 2 / s for s in norm.std], dtype=torch.float64)
    b = torch.tensor([(norm.scale / 2 - m) / s for m, s in zip(norm.mean, norm.std, strict=True)], dtype=torch.float64)
    w = weight.to(torch.float64)
    shift = (w.sum(dim=(2, 3)) * b).sum(dim=1)
    w = w * a.view(1, 3, 1, 1)
    if norm.order == "BGR":
        w = w.flip(1)
    return w.to(weight.dtype), shift.to(weight.dtype)


# --- reading files --------------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays (and dicts, lists, strings, numbers) only: what cydonia999's .pkl holds."""

    _NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        if module in self._NUMPY_CORE and name in ("_reconstruct", "scalar"):
            core = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else module)
            return getattr(core, name)
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles from Python 3 store bytes
            ("collections", "OrderedDict"): collections.OrderedDict,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"{module}.{name}: not a numpy array; refused (only numpy arrays are read)")


def _read_state(path: Path, kind: str, allow_pickle: bool) -> tuple[dict[str, Tensor], str]:
    """(flat name -> tensor, file format) for .pth / .pkl / .h5 / .safetensors."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".pth", ".pt", ".bin"):
            state = torch.load(path, map_location="cpu", weights_only=True)
            for wrapper in ("state_dict", "model_state_dict"):
                if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
                    state = state[wrapper]
            fmt = "torch"
        elif suffix in (".pkl", ".pickle"):
            if not allow_pickle:
                raise PretrainedError(
                    f"{path}: a pickle; pass allow_pickle=True (--allow-pickle) to read it with an unpickler that "
                    "builds numpy arrays only, or convert it once with `python -m training.pretrained`"
                )
            import numpy as np

            with open(path, "rb") as f:
                state = _NumpyOnlyUnpickler(f, encoding="latin1").load()  # Python 2 pickles, as published
            if isinstance(state, Mapping) and all(isinstance(v, np.ndarray) for v in state.values()):
                state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
            fmt = "pickle"
        elif suffix in (".h5", ".hdf5"):
            return _read_keras_h5(path), "keras-h5"
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path), "safetensors"
        else:
            raise PretrainedError(f"{path}: unknown file type {suffix!r}; expected {_LAYOUTS[kind]}")
    except PretrainedError:
        raise
    except FileNotFoundError:
        raise PretrainedError(f"{path}: no such file (expected {_LAYOUTS[kind]})") from None
    except Exception as e:  # torch.load, pickle and h5py each raise their own kinds
        raise PretrainedError(f"{path}: unreadable as {_format_name(suffix)} ({type(e).__name__}: {e})") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"{path}: not a flat dict of tensors/arrays; expected {_LAYOUTS[kind]}")
    return {k.removeprefix("module."): v for k, v in state.items()}, fmt


def _format_name(suffix: str) -> str:
    return {".pkl": "a pickle", ".pickle": "a pickle", ".h5": "HDF5", ".hdf5": "HDF5"}.get(suffix, "a torch file")


def _read_keras_h5(path: Path) -> dict[str, Tensor]:
    """Keras 2 weights (``save_weights`` or, under ``model_weights/``, ``save``): layer/param -> tensor."""
    try:
        import h5py
    except ImportError:
        raise PretrainedError(f"{path}: reading Keras .h5 files needs h5py: pip install 'affbatch[train]'") from None
    out: dict[str, Tensor] = {}
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        for layer in root:
            group = root[layer]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
            if not names:  # files without the attribute: every dataset under the layer's group
                found: list[str] = []
                group.visit(lambda n, g=group, found=found: found.append(n) if isinstance(g[n], h5py.Dataset) else None)
                names = found
            for n in names:
                param = n.rsplit("/", 1)[-1].split(":")[0]  # "conv1_1/kernel:0" -> "kernel"
                out[f"{layer}.{param}"] = torch.from_numpy(group[n][()])
    return out


# --- layouts -> our names ---------------------------------------------------------------------


def _vgg_conv_names() -> list[tuple[str, int]]:
    """(VGG-Face layer name, index in ``VGGFaceFC6.features``) of the 13 convolutions."""
    convs = [i for i, m in enumerate(bb.vgg16_features()) if isinstance(m, nn.Conv2d)]
    names = [f"conv{b + 1}_{i + 1}" for b, block in enumerate(vga.VGG16_BLOCKS) for i in range(len(block))]
    return list(zip(names, convs, strict=True))


def _vggface(state: dict[str, Tensor], fmt: str, feed: str) -> tuple[dict[str, Tensor], InputNorm]:
    keras = fmt == "keras-h5"
    ours: dict[str, Tensor] = {}
    for name, index in _vgg_conv_names():
        w, b = state[f"{name}.kernel" if keras else f"{name}.weight"], state[f"{name}.bias"]
        ours[f"features.{index}.weight"] = w.permute(3, 2, 0, 1).contiguous() if keras else w  # (h,w,in,out)
        ours[f"features.{index}.bias"] = b
    if feed == "fc6":
        w = state["fc6.kernel"].T if keras else state["fc6.weight"]  # Keras Dense kernels are (in, out)
        grid, channels = vga.VGGFACE_FC6_GRID, vga.VGG16_BLOCKS[-1][-1]
        if keras:  # rows in channels-last flatten order (h, w, c) -> torch's (c, h, w)
            w = w.reshape(-1, grid, grid, channels).permute(0, 3, 1, 2).reshape(w.shape[0], -1)
        ours["fc6.weight"], ours["fc6.bias"] = vga.fc6_weight_from_224(w.contiguous()), state["fc6.bias"]
    return ours, (VGGFACE_BGR if keras else VGGFACE_RGB)


_DAG = re.compile(r"^conv(\d)_(\d+)_(1x1_reduce|3x3|1x1_increase|1x1_proj)(_bn)?\.(\w+)$")
_DAG_PART = {"1x1_reduce": ("conv1", "bn1"), "3x3": ("conv2", "bn2"), "1x1_increase": ("conv3", "bn3")}


def _resnet_from_dag(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Albanie's VGGFace2 DAG names -> torchvision's (classifier dropped)."""
    ours = {}
    for key, v in state.items():
        if key.startswith("conv1_7x7_s2"):
            ours[("bn1." if key.startswith("conv1_7x7_s2_bn.") else "conv1.") + key.rsplit(".", 1)[1]] = v
        elif m := _DAG.match(key):
            stage, block, part, bn, param = m.groups()
            prefix = f"layer{int(stage) - 1}.{int(block) - 1}."
            if part == "1x1_proj":
                ours[prefix + ("downsample.1." if bn else "downsample.0.") + param] = v
            else:
                ours[prefix + _DAG_PART[part][1 if bn else 0] + "." + param] = v
    return ours


# torchvision's _load_state_dict for DenseNets: old checkpoints name the layers "norm.1", "conv.2" ...
_DENSENET_OLD = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def densenet_remap(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's old DenseNet keys (``denselayer1.norm.1.weight``) -> ``denselayer1.norm1.weight``."""
    return {((m.group(1) + m.group(2)) if (m := _DENSENET_OLD.match(k)) else k): v for k, v in state.items()}


def _convert(kind: str, state: dict[str, Tensor], fmt: str, feed: str) -> tuple[nn.Module, dict, InputNorm, str]:
    """(empty backbone, its state under our names, input norm, first conv name) for a file's state."""
    if kind == "vggface":
        ours, norm = _vggface(state, fmt, feed)
        return _empty_backbone(kind, feed, ours), ours, norm, "features.0"
    if kind == "vggface2-resnet50":
        dag = "conv1_7x7_s2.weight" in state
        ours = _resnet_from_dag(state) if dag else state
        return _empty_backbone(kind, feed, ours), ours, (VGGFACE2_RGB if dag else VGGFACE2_BGR), "conv1"
    if kind == "imagenet-resnet50":
        return _empty_backbone(kind, feed, state), state, IMAGENET, "conv1"
    return _empty_backbone(kind, feed, state), densenet_remap(state), IMAGENET, "features.conv0"


def _empty_backbone(kind: str, feed: str, ours: Mapping[str, Tensor]) -> nn.Module:
    """The backbone module ``kind`` loads into (VGG-Face's fc6 as wide as the file's)."""
    if kind == "vggface":
        return vga.VGGFaceFC6(fc6_units=ours["fc6.weight"].shape[0]) if feed == "fc6" else bb.VGG16Pool()
    if kind == "imagenet-densenet121":
        return bb.DenseNet121()
    return bb.ResNet50("pytorch" if kind == "imagenet-resnet50" else "caffe")


_FIRST_NORM = {"conv1": "bn1", "features.conv0": "features.norm0"}


def load_backbone(kind: str, path: str | os.PathLike, *, feed: str = "fc6", allow_pickle: bool = False) -> nn.Module:
    """The backbone ``kind`` (:data:`KINDS`) with the weights in ``path``, normalisation folded.

    ``feed``: for ``vggface``, ``fc6`` (a :class:`VGGFaceFC6`, fc6 adapted to 96x96) or ``pool``
    (:class:`~affbatch.models.backbones.VGG16Pool`, no fc6 needed: keras-vggface's ``notop``
    files do); the other kinds are always pooled. ``allow_pickle``: read cydonia999's ``.pkl``
    (numpy arrays only). A ``.safetensors`` file written by :func:`save_backbone` loads as is.
    Raises :class:`PretrainedError` naming the file and the layout expected.
    """
    if kind not in KINDS:
        raise PretrainedError(f"pretrained kind {kind!r}: choose one of {', '.join(KINDS)}")
    if kind != "vggface":
        feed = "pool"
    elif feed not in bb.FEEDS:
        raise PretrainedError(f"feed {feed!r}: choose one of {', '.join(bb.FEEDS)}")
    path = Path(path)
    state, fmt = _read_state(path, kind, allow_pickle)
    if fmt == "safetensors":
        return _saved_backbone(path, kind, feed, state)
    try:
        module, ours, norm, first = _convert(kind, state, fmt, feed)
    except KeyError as e:
        raise PretrainedError(f"{path}: no {e.args[0]!r} in it; expected {_LAYOUTS[kind]}") from None
    missing = _load(module, ours, path)  # what the file has beyond (fc7, fc8, fc, classifier) is left out
    if missing:
        raise PretrainedError(
            f"{path}: {len(missing)} weights of the {kind} backbone missing (first: {', '.join(missing[:3])}); "
            f"expected {_LAYOUTS[kind]}"
        )
    conv = module.get_submodule(first)
    with torch.no_grad():
        weight, shift = fold_input_norm(conv.weight, norm)
        conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.add_(shift)
        else:
            module.get_submodule(_FIRST_NORM[first]).running_mean.sub_(shift)
    return module


def _load(module: nn.Module, ours: Mapping[str, Tensor], path: Path) -> list[str]:
    """Load what ``module`` has a place for; the names it found no weights for."""
    own = module.state_dict()
    for k, v in ours.items():
        if k in own and own[k].shape != v.shape:
            raise PretrainedError(f"{path}: {k} has shape {tuple(v.shape)}, the backbone's is {tuple(own[k].shape)}")
    result = module.load_state_dict({k: v for k, v in ours.items() if k in own}, strict=False)
    return [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]


def save_backbone(module: nn.Module, path: str | os.PathLike, kind: str, source: str | os.PathLike) -> Path:
    """Write a loaded backbone as safetensors (folded; ``load_backbone(kind, path)`` reads it back)."""
    from safetensors.torch import save_file

    feed = "fc6" if isinstance(module, vga.VGGFaceFC6) else "pool"
    meta = {"affbatch_backbone": kind, "feed": feed, "folded": "[-1,1] RGB", "source": Path(source).name}
    tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def _saved_backbone(path: Path, kind: str, feed: str, state: dict[str, Tensor]) -> nn.Module:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("affbatch_backbone") != kind or meta.get("feed") != feed:
        raise PretrainedError(
            f"{path}: holds {meta.get('affbatch_backbone')!r} fed from {meta.get('feed')!r}, not {kind!r} from "
            f"{feed!r} (save_backbone writes such files)"
        )
    module = _empty_backbone(kind, feed, state)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise PretrainedError(f"{path}: does not fit the {kind} backbone ({str(e).splitlines()[0]})") from None
    return module


def load_into(model: nn.Module, kind: str, path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Load the pretrained backbone into ``model.cnn`` (a VGGFaceGRUAttention or a CnnRnn).

    Returns provenance for the checkpoint's config (``save_checkpoint(..., extra={"pretrained": ...})``).
    """
    feed = getattr(model, "feed", "fc6")
    backbone = getattr(model, "backbone", "vgg16")
    wanted = {"vggface": "vgg16", "vggface2-resnet50": "resnet50", "imagenet-resnet50": "resnet50"}.get(
        kind, "densenet121"
    )
    if backbone != wanted:
        raise PretrainedError(f"{kind} weights are for a {wanted} backbone; this model's is {backbone}")
    variant = getattr(model.cnn, "variant", None)
    if variant is not None and variant != ("pytorch" if kind == "imagenet-resnet50" else "caffe"):
        raise PretrainedError(f"{kind} weights need the resnet50 variant they were trained with, not {variant!r}")
    cnn = load_backbone(kind, path, feed=feed, allow_pickle=allow_pickle)
    model.cnn.load_state_dict(cnn.state_dict())
    return {"kind": kind, "file": Path(path).name, "sha256": file_sha256(path), "feed": feed}


def main(argv: list[str] | None = None) -> int:
    """``python -m training.pretrained KIND IN OUT.safetensors [--feed pool] [--allow-pickle]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.pretrained", description=main.__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--feed", choices=bb.FEEDS, default="fc6")
    parser.add_argument("--allow-pickle", action="store_true")
    args = parser.parse_args(argv)
    try:
        module = load_backbone(args.kind, args.source, feed=args.feed, allow_pickle=args.allow_pickle)
    except PretrainedError as e:
        parser.exit(2, f"error: {e}\n")
    save_backbone(module, args.out, args.kind, args.source)
    print(f"{args.out}: {args.kind} backbone, input normalisation folded for [-1,1] RGB crops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
