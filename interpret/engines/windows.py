"""Where the occlusion windows are, what fills them, and how window drops become a per-pixel map.

The definitions are captum ``Occlusion``'s (``sliding_window_shapes=(3, w, w)``, ``strides=(3, s, s)``): window
offsets are ``0, s, 2s, …`` for ``ceil((H − w) / s) + 1`` positions per axis, the last windows are clipped at the
border when ``s`` does not divide ``H − w``, and each pixel gets the mean of the drops of the windows covering it.
Every scorer (batched, incremental) and every occlusion method (exact, approximate) shares these three parts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF

from interpret.core.tensors import to_numpy

BASELINES = ("zero", "mean", "blur")


@dataclass(frozen=True)
class WindowGrid:
    """Top-left corners of the occlusion windows along each axis (captum's order: rows vary fastest)."""

    height: int
    width: int
    window: tuple[int, int]
    stride: tuple[int, int]
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), len(self.cols))

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def corners(self) -> list[tuple[int, int]]:
        """Every window's top-left corner, row by row (the order of a flattened ``shape`` array)."""
        return [(r, c) for r in self.rows for c in self.cols]

    def row_masks(self) -> np.ndarray:
        """(n_rows, H) 0/1 matrix: window row i covers image row y."""
        return _axis_masks(self.rows, self.window[0], self.height)

    def col_masks(self) -> np.ndarray:
        """(n_cols, W) 0/1 matrix."""
        return _axis_masks(self.cols, self.window[1], self.width)


def _axis_masks(starts: tuple[int, ...], w: int, n: int) -> np.ndarray:
    m = np.zeros((len(starts), n), dtype=np.float64)
    for i, s in enumerate(starts):
        m[i, s:min(s + w, n)] = 1.0
    return m


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def window_grid(height: int, width: int, window: int | tuple[int, int], stride: int | tuple[int, int]) -> WindowGrid:
    """Window positions exactly as captum's ``Occlusion`` places them (ValueError where captum would refuse)."""
    win, st = _pair(window), _pair(stride)
    starts = []
    for n, w, s in ((height, win[0], st[0]), (width, win[1], st[1])):
        if w < 1 or s < 1:
            raise ValueError("window and stride must be positive")
        if w > n:
            raise ValueError(f"window {w} is larger than the image side {n}")
        if s > w and w != n:
            raise ValueError(f"stride {s} larger than window {w} would leave pixels unoccluded")
        count = math.ceil((n - w) / s) + 1
        starts.append(tuple(k * s for k in range(count)))
    return WindowGrid(height, width, win, st, starts[0], starts[1])


def baseline_image(x: torch.Tensor, kind: str | float | torch.Tensor = "zero", blur_sigma: float = 5.0) -> torch.Tensor:
    """The replacement image (1, 3, H, W) in the model's normalized input space.

    "zero": zeros of the normalized input (captum's ``baselines=0``; the dataset-mean colour for ImageNet models,
    not black); "mean": the image's own per-channel mean; "blur": the image blurred with a Gaussian of
    ``blur_sigma`` pixels (reflect padding; blurring commutes with the per-channel normalization). A number or a
    tensor is used as given (normalized space).
    """
    if isinstance(kind, torch.Tensor):
        return kind.to(x.dtype).expand_as(x).clone()
    if not isinstance(kind, str):
        return torch.full_like(x, float(kind))
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        k = 2 * math.ceil(3 * blur_sigma) + 1
        k = min(k, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)  # reflect padding needs k // 2 < side
        return TF.gaussian_blur(x, [k, k], [blur_sigma, blur_sigma])
    raise ValueError(f"unknown baseline {kind!r}; choose one of {BASELINES}")


def aggregate(grid: WindowGrid, drops: np.ndarray) -> np.ndarray:
    """Per-pixel mean of the drops of the windows covering it: (Rᵀ D C) / (Rᵀ1 · 1ᵀC), the windows being
    separable (R, C: 0/1 row and column coverage of each window position)."""
    r, c = grid.row_masks(), grid.col_masks()
    # torch, not numpy: a numpy matmul leaves OpenBLAS's threads spinning, which slowed the forward passes that
    # follow (coarse-to-fine occlusion aggregates between its levels) by ~40 % on 2 cores
    total = (torch.from_numpy(r.T) @ torch.from_numpy(np.asarray(drops, dtype=np.float64)) @ torch.from_numpy(c))
    count = np.outer(r.sum(axis=0), c.sum(axis=0))
    return (to_numpy(total) / count).astype(np.float32)
