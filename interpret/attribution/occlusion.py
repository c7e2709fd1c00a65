"""Occlusion (Zeiler & Fergus 2014): slide a grey-out window over the image and record how the target drops.

The map has captum ``Occlusion``'s exact definition (``interpret.engines.windows``: where the windows are, what
fills them, drops → per-pixel mean). The windows are scored by one of two engines with one interface: exact
incremental inference (``interpret.engines.incremental``, the default, as in the app) or plain batched forward
passes (``interpret.engines.batched``). ``occlusion_attribution`` turns scores into the ``Attribution``, for this
exact method and for the approximate one (``interpret.attribution.occlusion_approx``).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from models.handle import ModelHandle

from interpret.core.result import Attribution
from interpret.core.tensors import check_input, on_device
from interpret.engines.batched import BatchedOcclusion
from interpret.engines.copies import NotTraceable
from interpret.engines.incremental import IncrementalOcclusion
from interpret.engines.windows import WindowGrid, aggregate, baseline_image, window_grid

Progress = Callable[[float], None] | None
ENGINES = ("incremental", "batched")


def occlusion_attribution(grid: WindowGrid, target: int, logit0: float, logits: np.ndarray, prob0: float,
                          probs: np.ndarray, params: dict, started: float, method: str = "occlusion",
                          **extra) -> Attribution:
    """The occlusion ``Attribution`` from the target logit and probability of the image (``logit0``, ``prob0``) and of
    every occluded copy (``logits``, ``probs``: n_rows × n_cols, scored or interpolated). ``map`` is the per-pixel
    mean logit drop; ``extra`` holds "prob_drop" (the same map for the probability), "logit_drops" and
    "prob_drops" (per window), "grid" (the window corners), "score", "prob", and the keyword ``extra`` given.
    ``seconds`` counts from ``started`` (a ``time.perf_counter()`` reading)."""
    drops = logit0 - np.asarray(logits, dtype=np.float64)
    prob_drops = prob0 - np.asarray(probs, dtype=np.float64)
    return Attribution(
        method=method, target=int(target), map=aggregate(grid, drops), signed=True, params=params,
        extra={"prob_drop": aggregate(grid, prob_drops), "logit_drops": drops.astype(np.float32),
               "prob_drops": prob_drops.astype(np.float32), "grid": (grid.rows, grid.cols),
               "score": logit0, "prob": prob0, **extra},
        seconds=time.perf_counter() - started)


def _score_all(scorer: BatchedOcclusion | IncrementalOcclusion, x: torch.Tensor, target: int,
               window: int | tuple[int, int], stride: int | tuple[int, int], baseline: str | float,
               blur_sigma: float, batch_size: int, progress: Progress, params: dict, started: float,
               engine: str) -> Attribution:
    """Score every window of the grid with ``scorer`` and build the exact map."""
    grid = window_grid(x.shape[2], x.shape[3], window, stride)
    base = baseline_image(x, baseline, blur_sigma)
    logit0, logits, prob0, probs = scorer.scores(x, base, grid.corners(), grid.window, int(target), batch_size,
                                                 progress)
    return occlusion_attribution(grid, target, logit0, logits.reshape(grid.shape), prob0, probs.reshape(grid.shape),
                                 params, started, engine=engine)


def occlusion_incremental(handle: ModelHandle, x: torch.Tensor, target: int, window: int | tuple[int, int] = 15,
                          stride: int | tuple[int, int] = 8, baseline: str | float = "zero", blur_sigma: float = 5.0,
                          batch_size: int = 64, tau: float = 1.0, low_precision: bool = False,
                          progress: Progress = None) -> Attribution:
    """Occlusion map (definition and ``extra`` as ``occlusion``) scored by incremental inference: the same map as
    captum's to float rounding when ``tau`` = 1, Krypton's approximation when < 1. ``low_precision``: approximate,
    each convolution's input change goes through a bfloat16 convolution (see ``IncrementalOcclusion``).
    ``extra["engine"]`` is "incremental", or "batched" where the net could not be traced (then the batched scorer
    runs on the private copy, ``fast=True``)."""
    started = time.perf_counter()
    check_input(x)
    x = on_device(handle, x.detach()).float()
    params = {"window": window, "stride": stride, "baseline": baseline, "blur_sigma": blur_sigma, "tau": tau,
              "low_precision": low_precision}
    try:
        scorer = IncrementalOcclusion(handle, tau=tau, delta_dtype=torch.bfloat16 if low_precision else None)
        engine = "incremental"
    except NotTraceable:
        scorer, engine = BatchedOcclusion(handle, fast=True), "batched"
    return _score_all(scorer, x, target, window, stride, baseline, blur_sigma, batch_size, progress, params,
                      started, engine)


def occlusion(handle: ModelHandle, x: torch.Tensor, target: int, window: int | tuple[int, int] = 15,
              stride: int | tuple[int, int] = 8, baseline: str | float = "zero", blur_sigma: float = 5.0,
              batch_size: int = 64, fast: bool = False, progress: Progress = None,
              engine: str = "incremental") -> Attribution:
    """Occlusion map: the target logit drop f(x) − f(x with the window replaced), averaged over covering windows.

    ``baseline`` is what fills the window: "zero" = zero in the model's normalized input space (as captum with
    ``baselines=0``), "mean" = the image's per-channel mean, "blur" = the Gaussian-blurred image (``blur_sigma``).
    ``extra["prob_drop"]`` is the same map for the softmax probability of the target; ``extra["logit_drops"]`` the
    drop of each window (n_rows × n_cols), ``extra["grid"]`` the window corners and ``extra["engine"]`` the engine
    that ran. ``progress(fraction)`` is called per batch.

    ``engine="incremental"`` (the default, the registry's) scores the windows by exact incremental inference: each
    layer recomputes only the region the window changes, 2.5–8× faster than captum at 224², same map to float
    rounding (≈1e-5); ``fast`` is then ignored, and a net torch.fx cannot trace runs the batched engine with
    ``fast=True``.

    ``engine="batched"``: one forward pass per window. ``fast=False`` evaluates the shared net itself, per image
    bit-for-bit as captum does (≤ 1e-5 relative to captum's map on any net). ``fast=True`` runs a private BN-folded
    channels-last copy, about 1.5–2.5× faster on CPU; its rounding differs (≈1e-7 of the logits), which is ≈1e-5 of
    the map on the default model and up to ~1e-4 where drops are tiny next to the logits (random-weight nets) —
    captum's own map moves by ~1e-5 there between two ``perturbations_per_eval`` values.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose 'batched' or 'incremental'")
    if engine == "incremental":
        res = occlusion_incremental(handle, x, target, window, stride, baseline, blur_sigma, batch_size,
                                    progress=progress)
        res.params.update({"fast": fast, "engine": engine})
        return res
    started = time.perf_counter()
    check_input(x)
    params = {"window": window, "stride": stride, "baseline": baseline, "blur_sigma": blur_sigma, "fast": fast,
              "engine": engine}
    return _score_all(BatchedOcclusion(handle, fast), on_device(handle, x.detach()).float(), target, window, stride, baseline,
                      blur_sigma, batch_size, progress, params, started, engine)
