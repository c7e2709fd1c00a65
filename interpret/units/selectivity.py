"""Class selectivity of units (Morcos et al., ICLR 2018), for any model over labelled images — where no concept
masks exist. Per unit: its mean activation per class (the spatial mean of its map per image, averaged over the
images of the class), the classes that drive it most, and the selectivity index

    SI = (μ_max − μ_rest) / (μ_max + μ_rest)

with μ_max the highest class mean and μ_rest the mean of the other classes' means (0 when the denominator is 0;
meant for non-negative units such as ReLU outputs — 1: only one class drives it, 0: all classes alike).

A streaming state of float64 sums and integer counts per class, merged by addition (exact counts; sums equal up
to float64 rounding of the addition order). Labels come from the collection's sub-folder names
(``cat/001.jpg`` → "cat"), or are given with the images (the classroom split).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from interpret.core.errors import InputError
from interpret.core.runtime import cancelled
from interpret.core.hooks import hooked
from interpret.core.layers import get_module
from interpret.core.tensors import device_of
from models.collections import ImageCollection


def folder_labels(col: ImageCollection) -> list[str] | None:
    """Each item's class: the first folder of its name (a folder tree with one sub-folder per class); None when
    some image has no folder (a flat collection has no labels)."""
    out = []
    for _, name in col.items:
        parts = name.replace("\\", "/").split("/")
        if len(parts) < 2 or not parts[0]:
            return None
        out.append(parts[0])
    return out


@dataclass
class SelectivityState:
    """Per layer the sums (n_classes, C) of the images' unit means; images per class (n_classes,)."""

    classes: list[str]
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: np.ndarray | None = None
    n_images: int = 0
    cancelled: bool = False


@dataclass
class LayerSelectivity:
    """One layer: class means (n_classes, C) and images per class."""

    layer: str
    classes: list[str]
    means: np.ndarray
    counts: np.ndarray

    def index(self) -> np.ndarray:
        """(C,) selectivity index of every unit (classes without images left out). The index is defined for
        non-negative units only (ReLU outputs): a unit with a negative class mean gets NaN, since there
        (μ_max − μ_rest)/(μ_max + μ_rest) is unbounded and can change sign."""
        mu = self.means[self.counts > 0]
        if mu.shape[0] < 2:
            return np.zeros(mu.shape[1])
        top = mu.max(0)
        rest = (mu.sum(0) - top) / (mu.shape[0] - 1)
        den = top + rest
        si = np.divide(top - rest, den, out=np.zeros_like(top), where=den != 0)
        si[(mu < 0).any(0)] = np.nan
        return si

    def top_classes(self, unit: int, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` classes with the highest mean activation of ``unit`` (ties: earlier class first)."""
        have = np.nonzero(self.counts > 0)[0]
        order = sorted(have, key=lambda c: (-self.means[c, unit], c))[:k]
        return [(self.classes[c], float(self.means[c, unit])) for c in order]

    def ranking(self) -> list[tuple[int, str, float]]:
        """Per unit (unit, its top class, SI), most selective first (ties: lower unit first; NaN — a unit with
        negative means — last)."""
        si = self.index()
        return sorted(((u, self.top_classes(u, 1)[0][0], float(si[u])) for u in range(len(si))),
                      key=lambda r: (bool(np.isnan(r[2])), 0.0 if np.isnan(r[2]) else -r[2], r[0]))


@dataclass
class Selectivity:
    layers: dict[str, LayerSelectivity]
    classes: list[str]
    n_images: int
    source: str
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False


def _unit_means(handle, x: torch.Tensor, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """(B, C) float64 per layer: the spatial mean of each unit's map (a (B, C) output is taken as it is)."""
    mods = {n: get_module(handle.net, n) for n in layers}
    got: dict[str, torch.Tensor] = {}
    with hooked(handle) as hs, torch.no_grad():
        for n, m in mods.items():
            def hook(_m, _i, out, n=n):
                if torch.is_tensor(out):
                    got[n] = out.detach()
            hs.forward(m, hook)
        handle.net(x)
    out = {}
    for n in layers:
        if n not in got:
            raise InputError(f"layer {n!r} does not return a single tensor or is not used in the forward pass")
        a = got[n]
        if a.dim() == 4:
            out[n] = a.double().mean((2, 3)).cpu().numpy()
        elif a.dim() == 2:
            out[n] = a.double().cpu().numpy()
        else:
            raise InputError(f"layer {n!r} gives {tuple(a.shape[1:])} per image; selectivity needs (C, H, W) or (C,)")
    return out


def selectivity_pass(handle, batches: Iterable[tuple[torch.Tensor, np.ndarray]], classes: Sequence[str],
                     layers: Sequence[str], progress: Callable[[int], Any] | None = None, cancel=None
                     ) -> SelectivityState:
    """The state over ``batches`` of (normalized inputs (B, 3, H, W), class indices (B,))."""
    if not layers:
        raise InputError("choose at least one layer")
    st = SelectivityState(list(classes), counts=np.zeros(len(classes), np.int64))
    for x, y in batches:
        y = np.asarray(y, np.int64)
        for n, m in _unit_means(handle, x.to(device_of(handle)), layers).items():
            s = st.sums.setdefault(n, np.zeros((len(classes), m.shape[1]), np.float64))
            np.add.at(s, y, m)
        st.counts += np.bincount(y, minlength=len(classes))
        st.n_images += len(y)
        if progress is not None:
            progress(st.n_images)
        if cancelled(cancel):
            st.cancelled = True
            break
    return st


def merge_selectivity(states: Sequence[SelectivityState]) -> SelectivityState:
    """States of disjoint parts → one state (counts exact; sums up to float64 rounding)."""
    if not states:
        raise InputError("nothing to merge")
    first = states[0]
    out = SelectivityState(list(first.classes), counts=np.zeros(len(first.classes), np.int64),
                           n_images=sum(s.n_images for s in states), cancelled=any(s.cancelled for s in states))
    for s in states:
        if s.classes != first.classes:
            raise InputError("cannot merge selectivity parts over different classes")
        out.counts += s.counts
        for n, v in s.sums.items():
            out.sums[n] = out.sums[n] + v if n in out.sums else v.copy()
    return out


def finish(state: SelectivityState, source: str = "", seconds: float = 0.0,
           skipped: Sequence[tuple[str, str]] = ()) -> Selectivity:
    counts = state.counts
    layers = {n: LayerSelectivity(n, list(state.classes),
                                  np.divide(s, counts[:, None], out=np.zeros_like(s), where=counts[:, None] > 0),
                                  counts.copy())
              for n, s in state.sums.items()}
    return Selectivity(layers, list(state.classes), state.n_images, source, seconds, list(skipped),
                       state.cancelled)


def _check_classes(classes: Sequence[str]) -> None:
    if len(set(classes)) < 2:
        raise InputError("class selectivity needs images of at least two classes")


def selectivity_of_collection(handle, col: ImageCollection, layers: Sequence[str], batch_size: int = 16,
                              progress: Callable[[int, int], Any] | None = None, cancel=None) -> Selectivity:
    """Selectivity over a labelled collection (one sub-folder per class); InputError when it has no labels."""
    t0 = time.perf_counter()
    for n in layers:
        get_module(handle.net, n)
    labels = folder_labels(col)
    if not labels:
        raise InputError("this collection has no class labels: put the images in one sub-folder per class "
                         "(cat/001.jpg, dog/002.jpg, …); the sub-folder name is the class")
    classes = sorted(set(labels))
    _check_classes(classes)
    by_index = {idx: classes.index(lab) for (idx, _), lab in zip(col.items, labels)}
    total = len(col)

    def batches():
        xs, ys = [], []
        for idx, _, img in col:
            xs.append(handle.input_tensor(img))
            ys.append(by_index[idx])
            if len(xs) == batch_size:
                yield torch.cat(xs), np.array(ys)
                xs, ys = [], []
        if xs:
            yield torch.cat(xs), np.array(ys)

    report = None if progress is None else (lambda d: progress(d + len(col.skipped), total))
    st = selectivity_pass(handle, batches(), classes, layers, report, cancel)
    return finish(st, col.source, time.perf_counter() - t0, col.skipped)


def selectivity_of_arrays(handle, images: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                          layers: Sequence[str], batch_size: int = 64, source: str = "images",
                          progress: Callable[[int, int], Any] | None = None, cancel=None) -> Selectivity:
    """Selectivity over uint8 images (N, H, W, 3) at the model's input size with class indices (N,)."""
    t0 = time.perf_counter()
    for n in layers:
        get_module(handle.net, n)
    _check_classes([classes[int(c)] for c in np.unique(labels)])
    pre = handle.preprocess

    def batches():
        for s in range(0, len(images), batch_size):
            u8 = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).permute(0, 3, 1, 2)
            yield pre.normalize(u8.float() / 255.0), labels[s:s + batch_size]

    report = None if progress is None else (lambda d: progress(d, len(images)))
    st = selectivity_pass(handle, batches(), classes, layers, report, cancel)
    return finish(st, source, time.perf_counter() - t0)
