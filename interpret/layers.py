"""Layer references by module path, validated up front with a helpful error listing the valid names.

Module paths (``features.28``, ``layer4.1.conv2``, ``_blocks.15._project_conv``) are used rather than FX node
names because they exist for every ``nn.Module`` — user and operator networks that FX cannot trace included.
A module that is called several times in one forward pass (torchvision ResNet's ``relu``) is reported with its
call count so views can say which call they show.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import nn

from .hooks import hooked

CONV_TYPES = (nn.Conv2d,)
POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
ACT_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    kind: str  # "conv" | "pool" | "act" | "norm" | "linear" | "block" | "other"


def _kind(m: nn.Module) -> str:
    if isinstance(m, CONV_TYPES):
        return "conv"
    if isinstance(m, POOL_TYPES):
        return "pool"
    if isinstance(m, ACT_TYPES):
        return "act"
    if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
        return "norm"
    if isinstance(m, nn.Linear):
        return "linear"
    return "block" if len(list(m.children())) else "other"


def list_layers(net: nn.Module, kinds: tuple[str, ...] | None = None) -> list[LayerInfo]:
    """Named submodules in definition order, optionally only of the given kinds."""
    out = []
    for name, m in net.named_modules():
        if not name:
            continue
        k = _kind(m)
        if kinds is None or k in kinds:
            out.append(LayerInfo(name, type(m).__name__, k))
    return out


def get_module(net: nn.Module, name: str) -> nn.Module:
    """The submodule at ``name``; ValueError listing close valid names if there is none."""
    mods = dict(net.named_modules())
    if name in mods and name:
        return mods[name]
    near = [n for n in mods if n and (name in n or n.split(".")[-1] == name.split(".")[-1])][:10]
    hint = ", ".join(near) if near else ", ".join([n for n in mods if n][:10]) + ", …"
    raise ValueError(f"no layer named {name!r} in this network; valid names include: {hint}")


def conv_layers(net: nn.Module) -> list[str]:
    return [l.name for l in list_layers(net, ("conv",))]


def last_conv_block(net: nn.Module, input_size: tuple[int, int] = (224, 224), lock=None) -> str:
    """The usual Grad-CAM layer: the last module (outermost of those returning the same tensor) whose output
    is still a spatial map (N, C, H, W with H, W > 1) and not a pooling or dropout output — ``layer4`` on
    ResNets, ``features.29`` on VGG16, ``inception5b`` on GoogLeNet, ``_act_head`` on EfficientNet-Lite.

    Found from a real forward pass on zeros, so it works for any architecture.
    """
    records: list[tuple[str, torch.Tensor, bool]] = []
    passive = POOL_TYPES + (nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten)
    with hooked(lock if lock is not None else threading.RLock()) as hs:
        for name, m in net.named_modules():
            if name:
                hs.forward(m, lambda mod, i, o, name=name: records.append((name, o, isinstance(mod, passive)))
                           if torch.is_tensor(o) else None)
        with torch.no_grad():
            net(torch.zeros(1, 3, *input_size))
    passive_ids = {id(o) for _, o, p in records if p}
    spatial = [n for n, o, p in records
               if not p and id(o) not in passive_ids and o.dim() == 4 and o.shape[2] > 1 and o.shape[3] > 1]
    if not spatial:
        raise ValueError("this network has no spatial layer")
    return spatial[-1]
