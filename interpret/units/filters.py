"""The weights of a conv layer, arranged for looking at: first-layer filters as small colour images, deeper
filters as per-input-channel k×k grids, their norms as an out × in matrix, depthwise filters one k×k each.

Normalization of the colour images (documented because it changes what one sees):
- ``"minmax"`` (default, as in the AlexNet 96-filter figure): per filter, over all its 3·k·k values,
  ``img = (w − min) / (max − min)``; every filter uses the full range; relative colour within a filter kept.
- ``"symmetric"``: per filter ``img = 0.5 + w / (2·max|w|)``: zero is mid-grey, so the sign is readable.
Both are affine per filter; ``FilterImages.weights()`` inverts them exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from interpret.core.errors import InputError, NotDefined
from interpret.core.layers import get_module
from interpret.units.layer_catalog import conv_layers


@dataclass
class FilterBank:
    """Weights of one conv layer: (out, in/groups, kh, kw) float32, plus per-filter statistics."""

    layer: str
    weight: np.ndarray
    groups: int
    in_channels: int
    stride: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def kernel(self) -> tuple[int, int]:
        return (int(self.weight.shape[2]), int(self.weight.shape[3]))

    @property
    def depthwise(self) -> bool:
        """Each filter sees one input channel (groups == in_channels)."""
        return self.groups > 1 and self.weight.shape[1] == 1

    @property
    def is_rgb(self) -> bool:
        """A first layer on RGB input: each filter is a k×k colour image."""
        return self.groups == 1 and self.weight.shape[1] == 3

    def stats(self) -> dict[str, np.ndarray]:
        """Per output filter: mean, std, min, max and L2 norm of its weights."""
        w = self.weight.reshape(self.out_channels, -1)
        return {"mean": w.mean(1), "std": w.std(1), "min": w.min(1), "max": w.max(1),
                "norm": np.sqrt((w.astype(np.float64) ** 2).sum(1)).astype(np.float32)}

    def input_channels_of(self, out_index: int) -> np.ndarray:
        """Indices of the input channels filter ``out_index`` sees (its group)."""
        per = self.weight.shape[1]
        group = out_index // (self.out_channels // self.groups)
        return np.arange(group * per, (group + 1) * per)


def filter_bank(handle_or_net, layer: str | None = None) -> FilterBank:
    """The weights of conv layer ``layer`` (default: the first conv layer) — a copy, the model is not touched."""
    net = getattr(handle_or_net, "net", handle_or_net)
    if layer is None:
        convs = conv_layers(net)
        if not convs:
            raise NotDefined("this network has no Conv2d layer")
        layer = convs[0]
    m = get_module(net, layer)
    if not isinstance(m, nn.Conv2d):
        raise InputError(f"layer {layer!r} is a {type(m).__name__}, not a Conv2d; conv layers: "
                         f"{', '.join(conv_layers(net)[:10])} …")
    with torch.no_grad():
        w = m.weight.detach().float().cpu().numpy().copy()
    return FilterBank(layer, w, int(m.groups), int(m.in_channels), tuple(m.stride), tuple(m.dilation))


@dataclass
class FilterImages:
    """Filters as images: (n, kh, kw, 3) for RGB filters or (n, kh, kw) for single-channel ones, in [0, 1],
    with the per-filter affine map used (``img = (w − lo) / (hi − lo)``)."""

    images: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    mode: str

    def weights(self) -> np.ndarray:
        """Invert the normalization: the weights, in the images' (n, kh, kw[, 3]) layout."""
        shape = (-1,) + (1,) * (self.images.ndim - 1)
        return self.lo.reshape(shape) + self.images * (self.hi - self.lo).reshape(shape)


def _normalize(w: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    if mode == "minmax":
        lo, hi = flat.min(1), flat.max(1)
    elif mode == "symmetric":
        m = np.abs(flat).max(1)
        lo, hi = -m, m
    else:
        raise InputError(f"unknown normalization {mode!r}; use 'minmax' or 'symmetric'")
    span = np.where(hi > lo, hi - lo, 1.0)
    hi = lo + span  # constant filters map to 0 (minmax) without dividing by zero
    shape = (-1,) + (1,) * (w.ndim - 1)
    img = (w - lo.reshape(shape)) / span.reshape(shape)
    return img.astype(np.float32), lo, hi


def rgb_filters(bank: FilterBank, mode: str = "minmax") -> FilterImages:
    """First-layer filters as colour images (n, kh, kw, 3), one normalization per filter (see module doc)."""
    if not bank.is_rgb:
        raise InputError(f"{bank.layer} has {bank.weight.shape[1]} input channels per filter; colour images need 3 "
                         "(use kernel_grid or filter_norms for deeper layers)")
    w = np.transpose(bank.weight, (0, 2, 3, 1))  # (n, kh, kw, 3)
    img, lo, hi = _normalize(w, mode)
    return FilterImages(img, lo, hi, mode)


def kernel_grid(bank: FilterBank, out_index: int, mode: str = "symmetric") -> FilterImages:
    """One output filter as its per-input-channel k×k kernels (in/groups, kh, kw), normalized together.

    For a depthwise layer this is the single k×k kernel of that channel."""
    if not 0 <= out_index < bank.out_channels:
        raise InputError(f"filter index {out_index} out of range 0..{bank.out_channels - 1}")
    w = bank.weight[out_index][None]  # (1, in, kh, kw): one normalization for the whole filter
    img, lo, hi = _normalize(w, mode)
    return FilterImages(img[0], np.repeat(lo, img.shape[1]), np.repeat(hi, img.shape[1]), mode)


def depthwise_kernels(bank: FilterBank, mode: str = "symmetric") -> FilterImages:
    """A depthwise layer's filters, one k×k image per channel (n, kh, kw), normalized per channel."""
    if bank.weight.shape[1] != 1:
        raise InputError(f"{bank.layer} is not depthwise (each filter sees {bank.weight.shape[1]} channels)")
    img, lo, hi = _normalize(bank.weight[:, 0], mode)
    return FilterImages(img, lo, hi, mode)


def filter_norms(bank: FilterBank) -> np.ndarray:
    """L2 norm of each k×k kernel: (out, in/groups) — which input channels each filter listens to."""
    w = bank.weight.astype(np.float64)
    return np.sqrt((w ** 2).sum((2, 3))).astype(np.float32)
