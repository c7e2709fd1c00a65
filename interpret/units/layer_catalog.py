"""The layer catalog: every named submodule of a network with its type and kind, for the unit views and the
layer pickers of the UI (which layers are convolutions, activations, pooling, blocks …)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from interpret.core.layers import POOL_TYPES

CONV_TYPES = (nn.Conv2d,)
ACT_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)


@dataclass(frozen=True)
class LayerInfo:
    """One named submodule: its module path, class name and kind."""

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


def conv_layers(net: nn.Module) -> list[str]:
    """Module paths of the Conv2d layers, in definition order."""
    return [l.name for l in list_layers(net, ("conv",))]
