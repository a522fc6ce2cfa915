"""RetinaFace (Deng et al. 2019) as biubug6/Pytorch_Retinaface builds it, batch-norm folded.

Same layers, same parameter names as biubug6's ``models/retinaface.py`` and ``models/net.py``
(and retinaface-pytorch's, which copies them): a backbone (``body``: MobileNet-0.25 or
ResNet-50) whose last three stages (strides 8, 16, 32) feed an FPN, one SSH context module per
level, and per level three 1x1 heads for 2 anchors per location: face/background logits, box
offsets and 5 landmark offsets.

Inference only: every BatchNorm is folded into the convolution before it, so each conv has a
bias and the BN slots in the ``nn.Sequential`` blocks are ``nn.Identity`` (kept so that the
conv indices, hence the parameter names, are the checkpoints' own). The packaged MobileNet-0.25
weights come folded; a checkpoint with BN keys is folded at load time by ``fold_batchnorm``.

Input: float32 (N, 3, H, W), normalised as the weights expect (see ``affbatch.faces.detector``).
Output: ``loc`` (N, P, 4), ``conf`` (N, P, 2) after a softmax (column 1: face), ``landmarks``
(N, P, 10), P = 2 * sum over strides s of ceil(H/s) * ceil(W/s), in ``prior_boxes`` order.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affbatch.files import file_sha256

BACKBONES = ("mobilenet0.25", "resnet50")
STRIDES = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
ANCHORS_PER_LOCATION = 2
#: nn.BatchNorm2d's default, which both biubug6's and retinaface-pytorch's models use.
BN_EPS = 1e-5

# biubug6's cfg_mnet / cfg_re50: 'in_channel' (x2, x4, x8 gives the three stages) and 'out_channel'.
_CHANNELS = {"mobilenet0.25": (32, 64), "resnet50": (256, 256)}


def _act(leaky: float) -> nn.Module:
    return nn.LeakyReLU(leaky, inplace=True) if leaky else nn.ReLU(inplace=True)


def _conv(inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=True)


def conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    """3x3 conv, (BN), LeakyReLU — biubug6's ``conv_bn``."""
    return nn.Sequential(_conv(inp, oup, 3, stride), nn.Identity(), _act(leaky))


def conv_bn_no_relu(inp: int, oup: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(_conv(inp, oup, 3, stride), nn.Identity())


def conv_bn1x1(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(_conv(inp, oup, 1, stride), nn.Identity(), _act(leaky))


def conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each (BN) + LeakyReLU: convs at indices 0 and 3."""
    return nn.Sequential(
        _conv(inp, inp, 3, stride, groups=inp),
        nn.Identity(),
        _act(leaky),
        _conv(inp, oup, 1),
        nn.Identity(),
        _act(leaky),
    )


class MobileNetV1(nn.Module):
    """MobileNet-0.25 of biubug6 (``stage1..3``); the classifier (avg, fc) is never used."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=0.1),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck (stride on the 3x3 conv), BN slots as Identity."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(inplanes, planes, 1), nn.Identity()
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.Identity()
        self.conv3, self.bn3 = _conv(planes, planes * 4, 1), nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(_conv(inplanes, planes * 4, 1, stride), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """torchvision's resnet50 up to layer4, as IntermediateLayerGetter keeps it (``body.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=True), nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layer = [Bottleneck(inplanes, planes, stride)]
            layer += [Bottleneck(planes * 4, planes, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            inplanes = planes * 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c2 = self.layer2(x)
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels[0], out_channels, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels[1], out_channels, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels[2], out_channels, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        output1 = self.output1(features[0])
        output2 = self.output2(features[1])
        output3 = self.output3(features[2])
        output2 = self.merge2(output2 + F.interpolate(output3, size=output2.shape[2:], mode="nearest"))
        output1 = self.merge1(output1 + F.interpolate(output2, size=output1.shape[2:], mode="nearest"))
        return [output1, output2, output3]


class SSH(nn.Module):
    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        leaky = 0.1 if out_channel <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(in_channel, out_channel // 2)
        self.conv5X5_1 = conv_bn(in_channel, out_channel // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(out_channel // 4, out_channel // 4)
        self.conv7X7_2 = conv_bn(out_channel // 4, out_channel // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(out_channel // 4, out_channel // 4)  # lower-case x, as upstream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv5x5_1 = self.conv5X5_1(x)
        out = torch.cat(
            [self.conv3X3(x), self.conv5X5_2(conv5x5_1), self.conv7x7_3(self.conv7X7_2(conv5x5_1))],
            dim=1,
        )
        return F.relu(out)


class _Head(nn.Module):
    def __init__(self, in_channels: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, ANCHORS_PER_LOCATION * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, A*V, H, W) -> (N, H*W*A, V): rows, then columns, then anchors, as prior_boxes.
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """RetinaFace with a ``"mobilenet0.25"`` or ``"resnet50"`` backbone; see the module doc."""

    def __init__(self, backbone: str = "mobilenet0.25") -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
        self.backbone = backbone
        # `--precision auto` never runs the detector in bf16 (engines.autotune: no runtime
        # declared), only in the faster of its fp32 runtimes. Alone, MobileNet-0.25 holds its own
        # gate in OpenVINO bf16 (same faces, IoU >= 0.93, scores within 0.002; torch's bf16 lost
        # one), but the affect models move with their crops far more than that: on carphone,
        # boxes moved at random by at most 1/20 px moved the prior's valence/arousal by up to
        # 0.09, and the bf16 boxes (up to 1.9 px off) by 0.20, ten times its 0.02 gate
        # (tests/engines/test_precision_gates.py). `--precision bf16` asked for by name is honoured.
        self.bf16_runtimes = ()
        in_channel, out_channel = _CHANNELS[backbone]
        self.body = MobileNetV1() if backbone == "mobilenet0.25" else ResNet50()
        self.fpn = FPN((in_channel * 2, in_channel * 4, in_channel * 8), out_channel)
        self.ssh1 = SSH(out_channel, out_channel)
        self.ssh2 = SSH(out_channel, out_channel)
        self.ssh3 = SSH(out_channel, out_channel)
        self.ClassHead = nn.ModuleList(_Head(out_channel, 2) for _ in STRIDES)
        self.BboxHead = nn.ModuleList(_Head(out_channel, 4) for _ in STRIDES)
        self.LandmarkHead = nn.ModuleList(_Head(out_channel, 10) for _ in STRIDES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.fpn(self.body(x))
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([head(f) for head, f in zip(self.BboxHead, features, strict=True)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, features, strict=True)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features, strict=True)], dim=1)
        return loc, F.softmax(logits, dim=-1), landmarks


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors (P, 4) float32 ``cx, cy, w, h`` as fractions of the network input's width/height.

    The order of the network's outputs: strides 8, 16, 32; within one, rows, columns, then the
    two sizes. Feature maps are ceil(side / stride), as the stride-2 convs with padding give.
    """
    levels = []
    for stride, sizes in zip(STRIDES, MIN_SIZES, strict=True):
        rows, cols = -(-height // stride), -(-width // stride)
        ys, xs = (np.arange(rows) + 0.5) * stride / height, (np.arange(cols) + 0.5) * stride / width
        cy, cx = (a.reshape(-1) for a in np.meshgrid(ys, xs, indexing="ij"))
        n = rows * cols
        level = np.empty((n, len(sizes), 4), np.float64)
        level[:, :, 0] = cx[:, None]
        level[:, :, 1] = cy[:, None]
        level[:, :, 2] = np.asarray(sizes, np.float64)[None, :] / width
        level[:, :, 3] = np.asarray(sizes, np.float64)[None, :] / height
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def decode(loc: np.ndarray, landmarks: np.ndarray, priors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (..., 4) ``x1, y1, x2, y2`` and landmarks (..., 5, 2) ``x, y``, as fractions.

    ``loc`` (..., P, 4), ``landmarks`` (..., P, 10), ``priors`` (P, 4) from ``prior_boxes``;
    biubug6's ``decode`` / ``decode_landm`` with variances 0.1 and 0.2.
    """
    centre, size = priors[:, :2], priors[:, 2:]
    box_centre = centre + loc[..., :2] * VARIANCES[0] * size
    box_size = size * np.exp(loc[..., 2:] * VARIANCES[1])
    boxes = np.concatenate([box_centre - box_size / 2, box_centre + box_size / 2], axis=-1)
    points = landmarks.reshape(*landmarks.shape[:-1], 5, 2)
    points = centre[:, None, :] + points * VARIANCES[0] * size[:, None, :]
    return boxes, points


# --- checkpoints ------------------------------------------------------------------------------


def _conv_of_batchnorm(bn: str) -> str:
    """The conv a BN follows: ``x.1`` after ``x.0`` (``x.4`` after ``x.3``), ``bnK`` after ``convK``."""
    parent, _, last = bn.rpartition(".")
    if last.isdigit() and int(last) > 0:
        return f"{parent}.{int(last) - 1}" if parent else str(int(last) - 1)
    if last.startswith("bn"):
        return f"{parent}.conv{last[2:]}" if parent else f"conv{last[2:]}"
    raise ValueError(f"cannot tell which convolution batch-norm {bn!r} follows")


def fold_batchnorm(state_dict: dict[str, torch.Tensor], eps: float = BN_EPS) -> dict[str, torch.Tensor]:
    """A state dict with every eval-mode BatchNorm folded into the conv before it.

    ``conv(x) * g / sqrt(v + eps) + (b - m * g / sqrt(v + eps))`` is ``BN(conv(x))`` in eval
    mode, so the folded conv gets ``w * scale`` and a bias ``b + (conv_bias - m) * scale``.
    Computed in float64, stored in float32.
    """
    out = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    for key in [k for k in out if k.endswith(".running_mean")]:
        bn = key[: -len(".running_mean")]
        conv = _conv_of_batchnorm(bn)
        if f"{conv}.weight" not in out:
            raise ValueError(f"batch-norm {bn!r} has no convolution {conv!r} before it")
        mean = out.pop(f"{bn}.running_mean").double()
        var = out.pop(f"{bn}.running_var").double()
        gamma = out.pop(f"{bn}.weight").double()
        beta = out.pop(f"{bn}.bias").double()
        scale = gamma / torch.sqrt(var + eps)
        weight = out[f"{conv}.weight"].double()
        bias = out.get(f"{conv}.bias", torch.zeros_like(mean)).double()
        out[f"{conv}.weight"] = (weight * scale.reshape(-1, 1, 1, 1)).float()
        out[f"{conv}.bias"] = (beta + (bias - mean) * scale).float()
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: safetensors, a torch file (never unpickled beyond tensors), or
    the one-file zip retinaface-pytorch publishes; ``{"state_dict": ...}`` and DataParallel's
    ``module.`` prefix are unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as first:
            # retinaface-pytorch's release asset is a plain zip holding one .pth.
            if not zipfile.is_zipfile(path):
                raise ValueError(f"{path}: not a torch checkpoint or safetensors file ({first})") from first
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if not m.endswith("/")]
                if len(members) != 1:
                    raise ValueError(f"{path}: not a torch checkpoint ({first})") from first
                state = torch.load(io.BytesIO(archive.read(members[0])), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def backbone_of(state_dict: dict[str, torch.Tensor]) -> str:
    if "body.layer1.0.conv1.weight" in state_dict:
        return "resnet50"
    if "body.stage1.0.0.weight" in state_dict:
        return "mobilenet0.25"
    raise ValueError("not a RetinaFace state dict (no body.layer1.* or body.stage1.* keys)")


def build(state_dict: dict[str, torch.Tensor], backbone: str | None = None) -> RetinaFace:
    """A RetinaFace in eval mode from a state dict in biubug6's layout, BN folded or not."""
    backbone = backbone or backbone_of(state_dict)
    model = RetinaFace(backbone)
    folded = fold_batchnorm(state_dict)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(folded))
    unexpected = sorted(set(folded) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not fit RetinaFace-{backbone}: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    for key, value in folded.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)}, RetinaFace-{backbone} has {tuple(expected[key].shape)}"
            )
    model.load_state_dict(folded)
    return model.eval()


def load(path: str | Path) -> tuple[RetinaFace, str]:
    """(model, sha256 of the file) from a checkpoint ``read_state_dict`` reads."""
    digest = file_sha256(path)
    try:
        model = build(read_state_dict(path))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return model, digest
