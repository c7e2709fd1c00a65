"""How far to trust a map: deletion/insertion curves (Petsiuk et al. 2018), map similarity (Spearman, SSIM) and
localisation against a mask (pointing game, share of positive energy inside the mask).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import stats
from skimage.metrics import structural_similarity

from models.handle import ModelHandle

from interpret.core.errors import InputError
from interpret.core.memory import run_chunks
from interpret.core.tensors import cpu64, on_device
from interpret.engines.windows import baseline_image


@dataclass
class DeletionInsertion:
    """Target probability after removing (deletion) or adding (insertion) the top ``fractions`` of pixels."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    auc_deletion: float
    auc_insertion: float
    baseline: str
    target: int


def pixel_order(attr_map: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most positive attribution first (ties keep raster order, so the order is reproducible)."""
    return np.argsort(-np.asarray(attr_map, dtype=np.float64).ravel(), kind="stable")


def auc(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoidal area under the curve over the fraction axis (0…1)."""
    f, v = np.asarray(fractions, dtype=np.float64), np.asarray(values, dtype=np.float64)
    return float(np.sum((f[1:] - f[:-1]) * (v[1:] + v[:-1]) / 2))


def deletion_insertion(handle: ModelHandle, x: torch.Tensor, target: int, attr_map: np.ndarray, steps: int = 32,
                       baseline: str | float = "blur", blur_sigma: float = 5.0, batch_size: int = 32,
                       progress: Callable[[float], None] | None = None) -> DeletionInsertion:
    """Deletion and insertion curves of one map, with their AUC.

    Pixels are ranked by ``attr_map`` (highest first). At fraction f = k/steps the top round(f·H·W) pixels are
    replaced by the baseline image (deletion) or copied onto it (insertion); the score is the softmax probability of
    ``target``. A faithful map gives a low deletion AUC and a high insertion AUC. ``baseline`` as in occlusion:
    "blur" (RISE's choice for insertion), "zero" (zero in normalized space), "mean", or a number.
    """
    x = on_device(handle, x.detach()).float()
    _, _, h, w = x.shape
    if np.shape(attr_map) != (h, w):
        raise InputError(f"map shape {np.shape(attr_map)} does not match the input {(h, w)}")
    base = baseline_image(x, baseline, blur_sigma)
    order = torch.from_numpy(pixel_order(attr_map)).to(x.device)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.rint(fractions * h * w).astype(int)
    # rank[p] = position of pixel p in the order; pixel p is "changed" at step k iff rank[p] < counts[k].
    rank = torch.empty(h * w, dtype=torch.long, device=x.device)
    rank[order] = torch.arange(h * w, device=x.device)
    rank = rank.view(1, 1, h, w)

    jobs = [(kind, int(c)) for kind in ("deletion", "insertion") for c in counts]
    scores = np.empty(len(jobs), dtype=np.float64)

    def step(start: int, stop: int) -> None:
        chunk = jobs[start:stop]
        changed = torch.cat([rank < c for _, c in chunk]).to(x.dtype)  # (B, 1, H, W)
        deleting = torch.tensor([k == "deletion" for k, _ in chunk], device=x.device).view(-1, 1, 1, 1)
        keep_x = torch.where(deleting, 1 - changed, changed)  # weight of the original image
        batch = keep_x * x + (1 - keep_x) * base
        with handle.lock, torch.inference_mode():
            probs = torch.softmax(handle.net(batch).float(), dim=1)[:, target]
        scores[start:stop] = cpu64(probs).numpy()
        if progress is not None:
            progress(stop / len(jobs))

    run_chunks(len(jobs), batch_size, step, device=x.device, what="deletion/insertion curves",
               hint="fewer steps, a smaller batch size or the CPU")
    n = len(counts)
    dele, ins = scores[:n], scores[n:]
    return DeletionInsertion(fractions, dele, ins, auc(fractions, dele), auc(fractions, ins),
                             str(baseline), int(target))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened); NaN when either map is constant (no ranking)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size:
        raise InputError("maps differ in size")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def _unit(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    span = np.ptp(m)
    return (m - m.min()) / span if span > 0 else np.zeros_like(m)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two maps, each min–max scaled to [0, 1] first (as Adebayo et al. compare maps)."""
    return float(structural_similarity(_unit(a), _unit(b), data_range=1.0))


def pointing_game(attr_map: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """Hit if the map's maximum lies in the mask, or within ``tolerance`` pixels of it (Zhang et al. 2016 use 15)."""
    m = np.asarray(attr_map, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if m.shape != mask.shape:
        raise InputError("map and mask differ in shape")
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    if tolerance <= 0:
        return bool(mask[y, x])
    yy, xx = np.nonzero(mask)
    return bool(np.any((yy - y) ** 2 + (xx - x) ** 2 <= tolerance ** 2))


def energy_in_mask(attr_map: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's positive mass inside the mask (energy-based pointing game, Wang et al. 2020); NaN if none."""
    m = np.clip(np.asarray(attr_map, dtype=np.float64), 0, None)
    mask = np.asarray(mask, dtype=bool)
    if m.shape != mask.shape:
        raise InputError("map and mask differ in shape")
    total = m.sum()
    return float(m[mask].sum() / total) if total > 0 else float("nan")
