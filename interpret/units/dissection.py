"""Network Dissection (Bau et al., CVPR 2017, as in NetDissect-Lite) on images whose concept masks are known.

Per unit (channel) of a layer: its threshold T is the top-``quantile`` (0.5 %) quantile of its activations over
the whole dataset (every image, every position of the layer's map); its map is upsampled bilinearly to the image
(``align_corners=False``) and thresholded, A = up > T; its IoU with concept k is Σ|A∩M_k| / Σ|A∪M_k|, summed over
the dataset. Its best concept is the one with the highest IoU; units with IoU ≥ ``iou_threshold`` (0.04) are
that concept's detectors.

Two streaming passes, each with a state that merges exactly (the Ray reducer runs them as two runs):

- Pass 1, exact quantile: the quantile needs only the top ``m`` values per unit, m = M − ⌊(1 − q)(M − 1)⌋ + 2 for
  M = N·h·w values; each part keeps its own top m (``torch.topk``), and the top m of merged parts is the top m
  of all. Memory: C × m float32 per layer — for the classroom model on 600 images, features.2 (16 units, 64²)
  keeps 16 × 12 291 values (0.8 MB), features.23 (96 units, 8²) 96 × 195 (75 kB). No sketch, no error bound
  needed: the order statistics are exact and the threshold is their linear interpolation as ``np.quantile``'s
  default method (float64; equal to it up to the rounding of that one interpolation).
- Pass 2, IoU tallies: intersections (C, K), active pixels per unit (C,) and mask pixels per concept (K,) as int64
  counts (each batch's 0/1 sums are taken in float64, exact below 2⁵³ pixels), so union = |A| + |M| − |A∩M| and any
  split of the dataset merges to the one-pass counts exactly.

The hooks that read the layers are per call (``interpret.core.hooks.hooked``), removed on exit.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from interpret.core.errors import InputError
from interpret.core.runtime import cancelled as _cancelled
from interpret.core.hooks import hooked
from interpret.core.layers import get_module
from interpret.core.tensors import device_of
from models.classroom import dataset as classroom

DISSECTION_SEED = 4  # a test split not used in training (seeds 0, 1), the collection (2) or the samples (3)


# ---------------------------------------------------------------------------------------------------------
# Data: images and concept masks

class ConceptSource(Protocol):
    """Images with a mask per concept: ``concepts``, ``source``, ``len()`` and ``batch(indices)`` → (uint8 images
    (B, H, W, 3), bool masks (B, K, H, W))."""

    concepts: list[str]
    source: str

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ConceptData:
    """Images and concept masks held in memory. images uint8 (N, H, W, 3); masks bool (N, K, H, W)."""

    images: np.ndarray
    masks: np.ndarray
    concepts: list[str]
    source: str = "images"
    labels: np.ndarray | None = None  # class index per image, if known
    label_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        return self.images[idx], self.masks[idx]

    def concept_mask(self, i: int, concept: str) -> np.ndarray:
        """bool (H, W): one concept's mask on image ``i``."""
        return self.masks[i, _concept_index(self.concepts, concept)]


@dataclass(frozen=True)
class ClassroomConcepts:
    """A classroom split named by its arguments (picklable, a few bytes): ``batch`` re-renders just the images
    asked for and their concept masks, equal to ``classroom_dissection_data`` with the same arguments."""

    split: str = "test"
    n: int = 600
    seed: int = DISSECTION_SEED
    spurious: bool = False

    @property
    def concepts(self) -> list[str]:
        return list(classroom.CONCEPTS)

    @property
    def source(self) -> str:
        return _classroom_source(self.split, self.n, self.seed, self.spurious)

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        scenes = classroom.scenes_for(self.split, list(indices), self.seed, self.spurious, n=self.n)
        images = np.stack([classroom.render(s)[0] for s in scenes]) if scenes else \
            np.zeros((0, classroom.SIZE, classroom.SIZE, 3), np.uint8)
        masks = np.zeros((len(scenes), len(classroom.CONCEPTS), classroom.SIZE, classroom.SIZE), bool)
        for b, s in enumerate(scenes):
            cm = classroom.concept_masks(s)
            for k, c in enumerate(classroom.CONCEPTS):
                masks[b, k] = cm[c]
        return images, masks


def _classroom_source(split: str, n: int, seed: int, spurious: bool) -> str:
    return f"classroom {split} split, {n} images, seed {seed}" + (", Clever Hans cue rates" if spurious else "")


def classroom_dissection_data(split: str = "test", n: int = 600, seed: int = DISSECTION_SEED,
                              spurious: bool = False) -> ConceptData:
    """A generated classroom split with its concept masks (``models.classroom.dataset.CONCEPTS``): the six shapes,
    "object", "tag", the four background kinds and "distractor". ``spurious``: the Clever Hans variant's cue rates
    (the tag nearly always on stars), else the clean variant's (10 % of images, any class)."""
    if n < 1:
        raise InputError("the dataset needs at least one image")
    ds = classroom.generate(split, n, seed, spurious=spurious)
    return ConceptData(ds.images, classroom.concept_stack(ds), list(classroom.CONCEPTS),
                       _classroom_source(split, n, seed, spurious), ds.labels, list(ds.classes))


def _concept_index(concepts: Sequence[str], concept: str) -> int:
    try:
        return list(concepts).index(concept)
    except ValueError:
        raise InputError(f"unknown concept {concept!r}; the concepts are {', '.join(concepts)}") from None


# ---------------------------------------------------------------------------------------------------------
# Results

@dataclass
class LayerDissection:
    """One layer: per-unit thresholds (C,), IoU (C, K) with every concept, and the integer tallies behind it."""

    layer: str
    concepts: list[str]
    thresholds: np.ndarray  # (C,) float64
    iou: np.ndarray  # (C, K) float64
    intersections: np.ndarray | None = None  # (C, K) int64
    unions: np.ndarray | None = None  # (C, K) int64
    map_size: tuple[int, int] = (0, 0)  # (h, w) of the layer's map

    def best(self) -> list[tuple[int, str, float]]:
        """Per unit (unit, best concept, its IoU), sorted by IoU (highest first; ties: lower unit first)."""
        k = np.argmax(self.iou, axis=1)  # first concept on ties
        v = self.iou[np.arange(len(k)), k]
        order = sorted(range(len(k)), key=lambda u: (-v[u], u))
        return [(int(u), self.concepts[int(k[u])], float(v[u])) for u in order]

    def detectors(self, concept: str, min_iou: float = 0.04) -> list[int]:
        """Units whose best concept is ``concept`` with IoU ≥ ``min_iou``, highest IoU first."""
        _concept_index(self.concepts, concept)
        return [u for u, c, v in self.best() if c == concept and v >= min_iou]

    def counts(self, min_iou: float = 0.04) -> dict[str, int]:
        """Detectors per concept (every concept, zeros included)."""
        out = {c: 0 for c in self.concepts}
        for _, c, v in self.best():
            if v >= min_iou:
                out[c] += 1
        return out


@dataclass
class Dissection:
    """Every dissected layer, with what produced it."""

    layers: dict[str, LayerDissection]
    n_images: int
    iou_threshold: float
    source: str
    seconds: float
    quantile: float = 0.005
    cancelled: bool = False

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per (layer, unit): best concept, IoU, threshold, detector or not — for tables and JSON."""
        return [{"layer": name, "unit": u, "concept": c, "iou": v, "threshold": float(ld.thresholds[u]),
                 "detector": v >= self.iou_threshold}
                for name, ld in self.layers.items() for u, c, v in ld.best()]


# ---------------------------------------------------------------------------------------------------------
# Streaming states

@dataclass
class QuantileState:
    """Pass 1 over some images: per layer the top ``keep`` activations of every unit (C, ≤keep) float32 and how
    many values were seen per unit."""

    quantile: float
    n_total: int  # images of the whole dataset (fixes keep, so parts merge exactly)
    top: dict[str, np.ndarray] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    keep: dict[str, int] = field(default_factory=dict)
    map_size: dict[str, tuple[int, int]] = field(default_factory=dict)
    n_images: int = 0
    cancelled: bool = False


@dataclass
class IoUState:
    """Pass 2 over some images: per layer intersections (C, K) and active pixels (C,), mask pixels (K,) — int64."""

    concepts: list[str]
    inter: dict[str, np.ndarray] = field(default_factory=dict)
    active: dict[str, np.ndarray] = field(default_factory=dict)
    mask_pixels: np.ndarray | None = None
    n_images: int = 0
    cancelled: bool = False


def keep_count(m_total: int, quantile: float) -> int:
    """Top values per unit that determine the (1 − quantile) quantile of ``m_total`` values exactly (+1 spare
    against rounding of the interpolation position)."""
    lo = math.floor((1.0 - quantile) * (m_total - 1))
    return min(m_total, m_total - lo + 2)


def _check_quantile(quantile: float) -> None:
    if not 0.0 < float(quantile) < 1.0:
        raise InputError(f"the quantile must be between 0 and 1 (exclusive), not {quantile}")


def _layer_maps(handle, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """One forward pass; each layer's output (its last call), checked to be a spatial map."""
    mods = {name: get_module(handle.net, name) for name in layers}
    got: dict[str, torch.Tensor] = {}
    with hooked(handle) as hs, torch.no_grad():
        for name, m in mods.items():
            def hook(_m, _inp, out, name=name):
                if torch.is_tensor(out):
                    got[name] = out.detach().clone()
            hs.forward(m, hook)
        handle.net(x)
    for name in layers:
        if name not in got:
            raise InputError(f"layer {name!r} does not return a single tensor or is not used in the forward pass")
        a = got[name]
        if a.dim() != 4 or a.shape[2] * a.shape[3] < 2:
            raise InputError(f"layer {name!r} gives {tuple(a.shape[1:])} per image, not a spatial map (C, H, W) "
                             "with more than one position: dissection needs a convolutional layer's map, not a "
                             "pooled or linear layer")
    return got


def _inputs(handle, images: np.ndarray) -> torch.Tensor:
    h, w = images.shape[1:3]
    if (h, w) != tuple(handle.input_size):
        raise InputError(f"the images are {h}×{w} but the model takes {handle.input_size[0]}×{handle.input_size[1]}; "
                         "dissection needs images (and masks) at the model's input size")
    u8 = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device_of(handle))
    return handle.preprocess.normalize(u8.float() / 255.0)


def _batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive slices of ``indices`` of ``batch_size`` (by position in the dataset: a shard of whole batches
    computes each image in the batch one run would)."""
    out: list[list[int]] = []
    for i in indices:
        if out and int(i) // batch_size == out[-1][0] // batch_size:
            out[-1].append(int(i))
        else:
            out.append([int(i)])
    return out


def quantile_pass(handle, data: ConceptSource, layers: Sequence[str], quantile: float = 0.005,
                  indices: Sequence[int] | None = None, n_total: int | None = None, batch_size: int = 64,
                  progress: Callable[[int, int], Any] | None = None, cancel=None) -> QuantileState:
    """Pass 1 over ``indices`` (default: all) of ``data``: the top activations per unit of each layer.
    ``n_total``: size of the whole dataset (default ``len(data)``); parts over disjoint indices merge exactly."""
    _check_quantile(quantile)
    if not layers:
        raise InputError("choose at least one layer")
    idx = list(range(len(data))) if indices is None else [int(i) for i in indices]
    st = QuantileState(float(quantile), int(n_total or len(data)))
    for b in _batches(idx, batch_size):
        images, _ = data.batch(b)
        maps = _layer_maps(handle, _inputs(handle, images), layers)
        for name, a in maps.items():
            C, h, w = a.shape[1:]
            if name not in st.keep:
                st.keep[name] = keep_count(st.n_total * h * w, quantile)
                st.map_size[name] = (int(h), int(w))
                st.top[name] = np.zeros((C, 0), np.float32)
                st.seen[name] = 0
            vals = torch.cat([torch.from_numpy(st.top[name]).to(a.device),
                              a.float().permute(1, 0, 2, 3).reshape(C, -1)], 1)
            k = min(st.keep[name], vals.shape[1])
            st.top[name] = torch.topk(vals, k, dim=1).values.cpu().numpy()
            st.seen[name] += int(a.shape[0] * h * w)
        st.n_images += len(b)
        if progress is not None:
            progress(st.n_images, len(idx))
        if _cancelled(cancel):
            st.cancelled = True
            break
    return st


def merge_quantiles(states: Sequence[QuantileState]) -> QuantileState:
    """Pass-1 states of disjoint parts → the state of one pass over all of them (exact)."""
    if not states:
        raise InputError("nothing to merge")
    first = states[0]
    out = QuantileState(first.quantile, first.n_total, n_images=sum(s.n_images for s in states),
                        cancelled=any(s.cancelled for s in states))
    for s in states:
        if (s.quantile, s.n_total) != (first.quantile, first.n_total):
            raise InputError("cannot merge dissection parts made with different settings")
        for name, top in s.top.items():
            if name not in out.top:
                out.top[name], out.seen[name] = top, s.seen[name]
                out.keep[name], out.map_size[name] = s.keep[name], s.map_size[name]
                continue
            vals = np.concatenate([out.top[name], top], 1)
            k = min(out.keep[name], vals.shape[1])
            out.top[name] = -np.partition(-vals, k - 1, axis=1)[:, :k] if k < vals.shape[1] else vals
            out.seen[name] += s.seen[name]
    return out


def thresholds_of(state: QuantileState) -> dict[str, np.ndarray]:
    """Per layer the (1 − quantile) quantile of every unit's activations (float64, (C,)), by np.quantile's
    default (linear) rule, from the kept top values."""
    out = {}
    for name, top in state.top.items():
        M = state.seen[name]
        if M == 0:
            continue
        p = (1.0 - state.quantile) * (M - 1)
        lo = math.floor(p)
        hi = min(lo + 1, M - 1)
        need = M - lo  # ranks from the top: M−1−lo (lower order statistic), M−1−hi (upper)
        if need > top.shape[1]:
            raise InputError(f"internal: {top.shape[1]} values kept for layer {name!r}, {need} needed")
        desc = -np.sort(-top.astype(np.float64), axis=1)
        a_lo, a_hi = desc[:, M - 1 - lo], desc[:, M - 1 - hi]
        out[name] = a_lo + (p - lo) * (a_hi - a_lo)
    return out


def _below(thr: np.ndarray) -> np.ndarray:
    """The largest float32 t with t <= thr (float64): for float32 x, x > thr ⇔ x > t (exact comparison)."""
    t = thr.astype(np.float32)
    up = t.astype(np.float64) > thr
    t[up] = np.nextafter(t[up], np.float32(-np.inf))
    return t


def upsample(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) → (B, C, H, W) bilinearly (align_corners=False, as NetDissect's resize of the map)."""
    if tuple(a.shape[2:]) == tuple(size):
        return a
    return F.interpolate(a, size=size, mode="bilinear", align_corners=False)


def iou_pass(handle, data: ConceptSource, thresholds: dict[str, np.ndarray], indices: Sequence[int] | None = None,
             batch_size: int = 64, progress: Callable[[int, int], Any] | None = None, cancel=None) -> IoUState:
    """Pass 2 over ``indices`` (default: all): per layer and unit the thresholded, upsampled map's intersection
    with every concept mask, its active pixels, and the concepts' pixels — integer counts."""
    layers = list(thresholds)
    idx = list(range(len(data))) if indices is None else [int(i) for i in indices]
    K = len(data.concepts)
    st = IoUState(list(data.concepts), mask_pixels=np.zeros(K, np.int64))
    thr32 = {n: torch.from_numpy(_below(np.asarray(t, np.float64))) for n, t in thresholds.items()}
    for b in _batches(idx, batch_size):
        images, masks = data.batch(b)
        maps = _layer_maps(handle, _inputs(handle, images), layers)
        H, W = masks.shape[2:]
        mk = torch.from_numpy(masks).to(torch.float64).permute(1, 0, 2, 3).reshape(K, -1)  # (K, B·H·W)
        st.mask_pixels += masks.sum(axis=(0, 2, 3), dtype=np.int64)
        for name, a in maps.items():
            C = a.shape[1]
            inter = st.inter.setdefault(name, np.zeros((C, K), np.int64))
            active = st.active.setdefault(name, np.zeros(C, np.int64))
            t = thr32[name].to(a.device)
            step = max(1, (1 << 24) // (a.shape[0] * H * W))  # channels per chunk: ≤ 16 M pixels at once
            for c0 in range(0, C, step):
                up = upsample(a[:, c0:c0 + step].float(), (H, W))
                act = (up > t[c0:c0 + step].view(1, -1, 1, 1)).permute(1, 0, 2, 3).reshape(up.shape[1], -1)
                af = act.to(torch.float64).cpu()  # 0/1 sums are exact in float64 for any batch (< 2⁵³ pixels)
                inter[c0:c0 + step] += torch.round(af @ mk.T).to(torch.int64).cpu().numpy()
                active[c0:c0 + step] += act.sum(1).cpu().numpy().astype(np.int64)
        st.n_images += len(b)
        if progress is not None:
            progress(st.n_images, len(idx))
        if _cancelled(cancel):
            st.cancelled = True
            break
    return st


def merge_iou(states: Sequence[IoUState]) -> IoUState:
    """Pass-2 states of disjoint parts → one pass's counts (integer sums: exact)."""
    if not states:
        raise InputError("nothing to merge")
    first = states[0]
    out = IoUState(list(first.concepts), mask_pixels=np.zeros(len(first.concepts), np.int64),
                   n_images=sum(s.n_images for s in states), cancelled=any(s.cancelled for s in states))
    for s in states:
        if s.concepts != first.concepts:
            raise InputError("cannot merge dissection parts over different concepts")
        out.mask_pixels += s.mask_pixels
        for name in s.inter:
            if name in out.inter:
                out.inter[name] = out.inter[name] + s.inter[name]
                out.active[name] = out.active[name] + s.active[name]
            else:
                out.inter[name], out.active[name] = s.inter[name].copy(), s.active[name].copy()
    return out


def finish(qstate: QuantileState, istate: IoUState, iou_threshold: float = 0.04, source: str = "",
           seconds: float = 0.0) -> Dissection:
    """The dissection from the two passes' merged states."""
    thr = thresholds_of(qstate)
    layers = {}
    for name, inter in istate.inter.items():
        union = istate.active[name][:, None] + istate.mask_pixels[None, :] - inter
        iou = np.divide(inter, union, out=np.zeros(inter.shape, np.float64), where=union > 0)
        layers[name] = LayerDissection(name, list(istate.concepts), thr[name], iou, inter, union,
                                       qstate.map_size[name])
    return Dissection(layers, istate.n_images, float(iou_threshold), source, seconds, qstate.quantile,
                      qstate.cancelled or istate.cancelled)


def dissect(handle, dataset: ConceptSource, layers: list[str], quantile: float = 0.005,
            iou_threshold: float = 0.04, progress: Callable[[int, int], Any] | None = None, batch_size: int = 64,
            cancel=None) -> Dissection:
    """Network Dissection of ``layers`` over ``dataset`` (``classroom_dissection_data()`` or any ConceptSource whose
    images are at the model's input size). ``progress(done, total)`` counts images over both passes (total 2N);
    ``cancel`` (callable or Event) stops after the current batch (``cancelled`` is set; counts are partial)."""
    t0 = time.perf_counter()
    n = len(dataset)
    if n == 0:
        raise InputError("the dataset has no images")
    for name in layers:
        get_module(handle.net, name)  # a wrong name fails before any image is read
    p1 = None if progress is None else (lambda d, t: progress(d, 2 * n))
    p2 = None if progress is None else (lambda d, t: progress(n + d, 2 * n))
    q = quantile_pass(handle, dataset, layers, quantile, batch_size=batch_size, progress=p1, cancel=cancel)
    if q.cancelled:
        return finish(q, IoUState(list(dataset.concepts), mask_pixels=np.zeros(len(dataset.concepts), np.int64),
                                  cancelled=True), iou_threshold, dataset.source, time.perf_counter() - t0)
    s = iou_pass(handle, dataset, thresholds_of(q), batch_size=batch_size, progress=p2, cancel=cancel)
    return finish(q, s, iou_threshold, dataset.source, time.perf_counter() - t0)


def unit_map(handle, image: np.ndarray, layer: str, unit: int) -> np.ndarray:
    """float32 (H, W): one unit's map on one uint8 image, upsampled to the image as the dissection does."""
    a = _layer_maps(handle, _inputs(handle, image[None]), [layer])[layer]
    if not 0 <= unit < a.shape[1]:
        raise InputError(f"unit {unit} out of range 0..{a.shape[1] - 1}")
    return upsample(a[:, unit:unit + 1].float(), image.shape[:2])[0, 0].cpu().numpy()
