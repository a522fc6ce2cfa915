"""The zoo's per-frame CNNs (paper, Section III-B.1): VGG-16, ResNet-50, DenseNet-121.

Each takes (N, 3, 96, 96) float32 face crops in [-1, 1], RGB, and returns (N, F) features:

| backbone | feed | F | what the RNN sees |
|---|---|---|---|
| ``vgg16`` | ``fc6`` | 4096 | fc6 -> ReLU -> dropout: :class:`~affbatch.models.vggface_gru_attn.VGGFaceFC6` itself |
| ``vgg16`` | ``pool`` | 512 | the last pooling layer (pool5, 3x3 at 96x96), global-average-pooled |
| ``resnet50`` | ``pool`` | 2048 | the last stage (3x3 at 96x96), global-average-pooled |
| ``densenet121`` | ``pool`` | 1024 | the last block after its batch norm and ReLU, global-average-pooled |

The paper feeds the RNN from fc6 or from the globally averaged last pooling layer for VGGFACE,
and from "the last convolution or pooling layer" for the others, as here. Classifier layers
(fc7, fc8, fc, classifier) are not part of the backbones.

State-dict keys are those of the files users have, so that pretrained weights load by name:
VGG-16 as ``VGGFaceFC6`` (``features.<i>``, ``fc6``); ResNet-50 and DenseNet-121 with
torchvision's exact names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...;
``features.conv0``, ``features.denseblock1.denselayer1.norm1`` ..., ``features.norm5``). No
torchvision import: it is not a dependency. ``training.pretrained`` maps other layouts (VGG-Face
DAG, Keras h5, VGGFace2 Caffe conversions) onto these names and folds each source's input
normalisation into the first convolution.

ResNet-50 comes in two variants that share the key names but not the function:
``"caffe"`` (He et al.'s original, as the VGGFace2 models were trained in Caffe: stride 2 in a
stage's first 1x1 convolution, 3x3 max-pool without padding, rounding up) and ``"pytorch"``
(torchvision's "v1.5": stride 2 in the 3x3 convolution, max-pool padded by 1). At 96x96 both
give 48 -> 24 after the stem.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from affbatch.models import vggface_gru_attn as vga

BACKBONES = ("vgg16", "resnet50", "densenet121")
FEEDS = ("fc6", "pool")
RESNET_VARIANTS = ("caffe", "pytorch")

# ResNet-50 (He et al. 2016): bottleneck widths and blocks per stage.
RESNET50_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))
RESNET_EXPANSION = 4
# DenseNet-121 (Huang et al. 2017): growth rate, layers per block, stem width, bottleneck factor.
DENSENET121_GROWTH = 32
DENSENET121_BLOCKS = (6, 12, 24, 16)
DENSENET121_STEM = 64
DENSENET_BN_SIZE = 4


def vgg16_features() -> nn.Sequential:
    """VGG-16's 13 convolutions and 5 pools, laid out (and indexed) as ``VGGFaceFC6.features``."""
    layers: list[nn.Module] = []
    channels = 3
    for block in vga.VGG16_BLOCKS:
        for out in block:
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG16Pool(nn.Module):
    """VGG-16 trunk to pool5, global-average-pooled: (N, 3, 96, 96) -> (N, 512)."""

    out_features = vga.VGG16_BLOCKS[-1][-1]

    def __init__(self):
        super().__init__()
        self.features = vgg16_features()

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))


class Bottleneck(nn.Module):
    """ResNet's 1x1 -> 3x3 -> 1x1 block with torchvision's names; ``stride_in_1x1`` for Caffe's."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, stride_in_1x1: bool = False):
        super().__init__()
        out = planes * RESNET_EXPANSION
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=s3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ResNet-50 to its last stage, global-average-pooled: (N, 3, 96, 96) -> (N, 2048)."""

    out_features = RESNET50_STAGES[-1][0] * RESNET_EXPANSION

    def __init__(self, variant: str = "caffe"):
        super().__init__()
        if variant not in RESNET_VARIANTS:
            raise ValueError(f"resnet50 variant {variant!r}: choose one of {', '.join(RESNET_VARIANTS)}")
        self.variant = variant
        caffe = variant == "caffe"
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0 if caffe else 1, ceil_mode=caffe)
        inplanes = 64
        for i, (planes, blocks) in enumerate(RESNET50_STAGES):
            stride = 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(inplanes, planes, stride if b == 0 else 1, stride_in_1x1=caffe))
                inplanes = planes * RESNET_EXPANSION
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


class _DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth: int = DENSENET121_GROWTH, bn_size: int = DENSENET_BN_SIZE):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, bn_size * growth, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, in_features: int, growth: int = DENSENET121_GROWTH):
        super().__init__()
        for i in range(layers):
            self[f"denselayer{i + 1}"] = _DenseLayer(in_features + i * growth, growth)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


def _transition(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            norm=nn.BatchNorm2d(in_features),
            relu=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_features, out_features, kernel_size=1, bias=False),
            pool=nn.AvgPool2d(kernel_size=2, stride=2),
        )
    )


class DenseNet121(nn.Module):
    """DenseNet-121 to ``norm5`` -> ReLU, global-average-pooled: (N, 3, 96, 96) -> (N, 1024)."""

    def __init__(self):
        super().__init__()
        stem = DENSENET121_STEM
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(stem),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        width = stem
        for i, n in enumerate(DENSENET121_BLOCKS):
            layers[f"denseblock{i + 1}"] = _DenseBlock(n, width)
            width += n * DENSENET121_GROWTH
            if i < len(DENSENET121_BLOCKS) - 1:
                layers[f"transition{i + 1}"] = _transition(width, width // 2)
                width //= 2
        layers["norm5"] = nn.BatchNorm2d(width)
        self.features = nn.Sequential(layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.features(x)).mean(dim=(2, 3))


def make_backbone(name: str, feed: str = "pool", variant: str = "caffe") -> nn.Module:
    """The backbone ``name`` feeding ``feed`` (``fc6`` exists for vgg16 only), freshly initialised.

    ``variant`` applies to resnet50 only (see the module docstring).
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    if feed not in FEEDS or (feed == "fc6" and name != "vgg16"):
        allowed = FEEDS if name == "vgg16" else ("pool",)
        raise ValueError(f"backbone {name} fed from {feed!r}: choose one of {', '.join(allowed)}")
    if name == "vgg16":
        module: nn.Module = vga.VGGFaceFC6() if feed == "fc6" else VGG16Pool()
    elif name == "resnet50":
        module = ResNet50(variant)
    else:
        module = DenseNet121()
    init_backbone_(module)
    return module


def backbone_width(module: nn.Module) -> int:
    """F, the width of the features ``module`` returns per frame."""
    if isinstance(module, vga.VGGFaceFC6):
        return module.fc6.out_features
    return int(module.out_features)


def init_backbone_(module: nn.Module) -> nn.Module:
    """Initialisation for training from scratch (and for tests with random weights).

    As ``VGGFaceGRUAttention.reset_parameters``: He (fan-in) for the convolutions, LeCun for
    linear layers, batch norms at identity; so random weights give features that depend on the
    input. In a ResNet, each residual branch's last batch norm starts at ``1/sqrt(blocks)``
    instead (the residual-branch scaling of Fixup, Zhang et al. 2019): with 16 blocks at unit
    gain the eval-mode features of random weights grow ~300-fold, which saturates the RNN.
    Returns ``module``.
    """
    blocks = [m for m in module.modules() if isinstance(m, Bottleneck)]
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, m.in_features**-0.5)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
    for block in blocks:
        nn.init.constant_(block.bn3.weight, len(blocks) ** -0.5)
    return module
