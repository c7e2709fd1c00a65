"""Occlusion (Zeiler & Fergus 2014): slide a grey-out window over the image and record how the target drops.

The map has captum ``Occlusion``'s exact definition (``sliding_window_shapes=(3, w, w)``, ``strides=(3, s, s)``):
window offsets are ``0, s, 2s, …`` for ``ceil((H − w) / s) + 1`` positions per axis, the last windows are clipped at
the border when ``s`` does not divide ``H − w``, and each pixel gets the mean of the drops of the windows covering it.

The work is split in three parts so that later speed-ups can swap one without touching the others:
``window_grid`` (where the windows are), ``window_scores`` (the model's target logit for every occluded image —
batched here; an incremental-inference scorer can replace it) and ``aggregate`` (drops → per-pixel mean).
"""
from __future__ import annotations

import copy
import math
import time
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn

from models.handle import ModelHandle

from .result import Attribution

Progress = Callable[[float], None] | None
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


# ---- the scorer ------------------------------------------------------------------------------------------------

# A private, faster copy of each shared network (batch norm folded into the convolutions, channels-last memory).
# Built once under the model's lock (so no per-call hook is copied), keyed weakly by the shared net, and rebuilt if
# the shared parameters were changed in place. The shared net itself is never touched.
_FAST: "weakref.WeakKeyDictionary[nn.Module, tuple[int, nn.Module]]" = weakref.WeakKeyDictionary()


def _param_version(net: nn.Module) -> int:
    return sum(p._version for p in net.parameters()) + sum(b._version for b in net.buffers())


def fast_copy(handle: ModelHandle) -> nn.Module:
    """Eval-mode copy of ``handle.net`` with conv+BN folded (FX) and channels-last weights, cached per net.

    Folding changes rounding only (≈1e-6 relative on logits). Falls back to a plain channels-last copy where the
    net cannot be traced by torch.fx.
    """
    net = handle.net
    with handle.lock:
        version = _param_version(net)
        hit = _FAST.get(net)
        if hit is not None and hit[0] == version:
            return hit[1]
        try:
            from torch.fx.experimental.optimization import fuse

            fast = fuse(net, inplace=False)
        except Exception:  # untraceable control flow: keep the module structure
            fast = copy.deepcopy(net)
        fast = fast.eval().to(memory_format=torch.channels_last)
        for p in fast.parameters():
            p.requires_grad_(False)
        _FAST[net] = (version, fast)
        return fast


def _forward(handle: ModelHandle, net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Logits of a batch. The shared net runs under its lock; the private fast copy never carries hooks and an
    eval-mode forward changes no state, so it runs without blocking other users of the model."""
    with torch.inference_mode():
        if net is handle.net:
            with handle.lock:
                return net(batch).float()
        return net(batch.contiguous(memory_format=torch.channels_last)).float()


def window_scores(handle: ModelHandle, x: torch.Tensor, base: torch.Tensor, grid: WindowGrid, target: int,
                  batch_size: int = 64, fast: bool = False, progress: Progress = None
                  ) -> tuple[float, np.ndarray, float, np.ndarray]:
    """Target logit and probability of the image and of every occluded copy.

    Returns (logit, logits (n_rows, n_cols), prob, probs (n_rows, n_cols)). The occluded copies are built on the
    fly batch by batch (memory stays at ``batch_size`` images) and the model's lock is held per batch only, so
    other sessions can use the model in between.
    """
    net = fast_copy(handle) if fast else handle.net
    nr, nc = grid.shape
    wh, ww = grid.window
    out0 = _forward(handle, net, x)
    logit0 = float(out0[0, target])
    prob0 = float(torch.softmax(out0, dim=1)[0, target])
    logits = np.empty(nr * nc, dtype=np.float64)
    probs = np.empty(nr * nc, dtype=np.float64)
    total = nr * nc
    for start in range(0, total, batch_size):
        idx = range(start, min(start + batch_size, total))
        batch = x.expand(len(idx), -1, -1, -1).clone()
        for b, k in enumerate(idx):
            r, c = grid.rows[k // nc], grid.cols[k % nc]
            batch[b, :, r:r + wh, c:c + ww] = base[0, :, r:r + wh, c:c + ww]
        out = _forward(handle, net, batch)
        logits[idx.start:idx.stop] = out[:, target].double().numpy()
        probs[idx.start:idx.stop] = torch.softmax(out, dim=1)[:, target].double().numpy()
        if progress is not None:
            progress(idx.stop / total)
    return logit0, logits.reshape(nr, nc), prob0, probs.reshape(nr, nc)


def aggregate(grid: WindowGrid, drops: np.ndarray) -> np.ndarray:
    """Per-pixel mean of the drops of the windows covering it: (Rᵀ D C) / (Rᵀ1 · 1ᵀC), the windows being
    separable (R, C: 0/1 row and column coverage of each window position)."""
    r, c = grid.row_masks(), grid.col_masks()
    # torch, not numpy: a numpy matmul leaves OpenBLAS's threads spinning, which slowed the forward passes that
    # follow (coarse-to-fine occlusion aggregates between its levels) by ~40 % on 2 cores
    total = (torch.from_numpy(r.T) @ torch.from_numpy(np.asarray(drops, dtype=np.float64)) @ torch.from_numpy(c))
    count = np.outer(r.sum(axis=0), c.sum(axis=0))
    return (total.numpy() / count).astype(np.float32)


def occlusion(handle: ModelHandle, x: torch.Tensor, target: int, window: int | tuple[int, int] = 15,
              stride: int | tuple[int, int] = 8, baseline: str | float = "zero", blur_sigma: float = 5.0,
              batch_size: int = 64, fast: bool = False, progress: Progress = None,
              engine: str = "batched") -> Attribution:
    """Occlusion map: the target logit drop f(x) − f(x with the window replaced), averaged over covering windows.

    ``baseline`` is what fills the window: "zero" = zero in the model's normalized input space (as captum with
    ``baselines=0``), "mean" = the image's per-channel mean, "blur" = the Gaussian-blurred image (``blur_sigma``).
    ``extra["prob_drop"]`` is the same map for the softmax probability of the target; ``extra["logit_drops"]`` the
    drop of each window (n_rows × n_cols) and ``extra["grid"]`` the window corners. ``progress(fraction)`` is
    called per batch.

    ``fast=False`` evaluates the shared net itself, per image bit-for-bit as captum does (≤ 1e-5 relative to
    captum's map on any net). ``fast=True`` runs a private BN-folded channels-last copy, about 1.5–2.5× faster on
    CPU; its rounding differs (≈1e-7 of the logits), which is ≈1e-5 of the map on the default model and up to
    ~1e-4 where drops are tiny next to the logits (random-weight nets) — captum's own map moves by ~1e-5 there
    between two ``perturbations_per_eval`` values.

    ``engine="incremental"`` scores the windows by exact incremental inference (``interpret.incremental``: each
    layer recomputes only the region the window changes), 2.5–8× faster than captum at 224², same map to float
    rounding (≈1e-5); ``fast`` is then ignored.
    """
    if engine == "incremental":
        from .incremental import occlusion_incremental

        res = occlusion_incremental(handle, x, target, window, stride, baseline, blur_sigma, batch_size,
                                    progress=progress)
        res.params.update({"fast": fast, "engine": engine})
        return res
    if engine != "batched":
        raise ValueError(f"unknown engine {engine!r}; choose 'batched' or 'incremental'")
    t0 = time.perf_counter()
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W), got {tuple(x.shape)}")
    x = x.detach().float()
    grid = window_grid(x.shape[2], x.shape[3], window, stride)
    base = baseline_image(x, baseline, blur_sigma)
    logit0, logits, prob0, probs = window_scores(handle, x, base, grid, int(target), batch_size, fast, progress)
    drops = logit0 - logits
    prob_drops = prob0 - probs
    return Attribution(
        method="occlusion", target=int(target), map=aggregate(grid, drops), signed=True,
        params={"window": window, "stride": stride, "baseline": baseline, "blur_sigma": blur_sigma,
                "fast": fast, "engine": engine},
        extra={"prob_drop": aggregate(grid, prob_drops), "logit_drops": drops.astype(np.float32),
               "prob_drops": prob_drops.astype(np.float32), "grid": (grid.rows, grid.cols),
               "score": logit0, "prob": prob0},
        seconds=time.perf_counter() - t0)
