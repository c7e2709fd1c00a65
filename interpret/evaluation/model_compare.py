"""Two models on one image: each one's top-5, the same attribution method's map of each for a chosen class, both
resampled onto one common display grid, their signed difference and their Spearman rank correlation.

Each model gets its own preprocessing and input size (a 64² classroom CNN beside a 224² EfficientNet). A model
sees the centred square of side ``crop / resize`` × the image's shorter side (resize the shorter side, centre
crop), so two models see different parts of the image. The common frame is the part both see: the smaller of the
two centred squares. Each map is cut to that square and resampled bilinearly (pixel centres aligned, edges held)
onto ``size × size`` pixels, ``size`` being the number of input pixels the square spans in the model that sees it
in more detail, so neither map is ever shrunk (no aliasing), only the coarser one enlarged. Positions agree to
within the half pixel that the centre crop rounds.

The difference is B − A of the maps each divided by its own largest |value| (the models' scores, hence their
gradients, have unrelated scales), so it lies in [−2, 2] and 0 means "the same share of the map's peak". The rank
correlation is taken on the resampled maps (ranks need no common scale).

Class choice: by default each model explains its own top class. A class given by name (or by index when both
label lists are the same) is explained by both; it must be a class both models have.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from interpret.attribution.registry import explain, get_spec
from interpret.core.errors import InputError
from interpret.core.result import Attribution
from interpret.evaluation.metrics import spearman
from models.handle import ModelHandle, Preprocess

TOP_K = 5


def field_fraction(pre: Preprocess) -> float:
    """Side of the square a model sees, as a fraction of the image's shorter side."""
    return pre.crop / pre.resize


def shared_classes(a: ModelHandle, b: ModelHandle) -> list[str]:
    """Class names both models have, in A's order."""
    other = set(b.labels)
    return [lab for lab in a.labels if lab in other]


def same_labels(a: ModelHandle, b: ModelHandle) -> bool:
    return list(a.labels) == list(b.labels)


def _axis_weights(n: int, ratio: float, size: int) -> np.ndarray:
    """size×n bilinear weights sampling the centred ``ratio`` part of an axis of n pixels at ``size`` points."""
    u = np.arange(size, dtype=np.float64)
    g = ratio * ((2 * u + 1) / size - 1)  # normalised position in [-1, 1] of the map's full extent
    q = np.clip(((g + 1) * n - 1) / 2, 0, n - 1)  # pixel coordinate, pixel centres at integers
    i0 = np.minimum(np.floor(q).astype(int), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    f = q - i0
    w = np.zeros((size, n))
    w[np.arange(size), i0] += 1 - f
    w[np.arange(size), i1] += f
    return w


def resample_centre(m: np.ndarray, ratio: float, size: int) -> np.ndarray:
    """The centred ``ratio`` (≤ 1) square of map ``m`` (h×w) resampled bilinearly to size×size, float64."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2 or not 0 < ratio <= 1 or size < 1:
        raise InputError(f"cannot resample a {m.shape} map at ratio {ratio} to {size} px")
    return _axis_weights(m.shape[0], ratio, size) @ m @ _axis_weights(m.shape[1], ratio, size).T


def common_frame(a: Preprocess, b: Preprocess) -> tuple[float, float, int]:
    """(ratio of A's map, ratio of B's map, display size) of the part of the image both models see."""
    fa, fb = field_fraction(a), field_fraction(b)
    f = min(fa, fb)
    ra, rb = f / fa, f / fb
    size = int(math.ceil(max(a.crop * ra, b.crop * rb) - 1e-9))
    return ra, rb, size


def common_view(img: Image.Image, a: Preprocess, b: Preprocess) -> np.ndarray:
    """The part of ``img`` both models see, at the display size: H×W×3 float in [0, 1]."""
    _, _, size = common_frame(a, b)
    f = min(field_fraction(a), field_fraction(b))
    view = Preprocess(max(1, round(size / f)), size, a.mean, a.std).view(img)
    return np.asarray(view, dtype=np.float32) / 255.0


def unit_peak(m: np.ndarray) -> np.ndarray:
    """The map divided by its largest |value| (all zeros stays zeros)."""
    m = np.asarray(m, dtype=np.float64)
    peak = float(np.abs(m).max()) if m.size else 0.0
    return m / peak if peak > 0 else np.zeros_like(m)


@dataclass
class ModelSide:
    """One model's part: its top-k (index, label, probability), the class explained, the map at its own input
    size (``attr``) and resampled to the common frame (``common``)."""

    key: str
    name: str
    topk: list[tuple[int, str, float]]
    target: int
    label: str
    attr: Attribution
    common: np.ndarray


@dataclass
class ModelComparison:
    """Both sides, the signed difference B − A of the peak-normalised common maps, their Spearman correlation,
    whether both explain the same class, and a note for the user (label sets, class choice)."""

    a: ModelSide
    b: ModelSide
    method: str
    signed: bool
    size: int
    difference: np.ndarray
    rank_correlation: float
    same_class: bool
    shared: list[str]
    note: str
    seconds: float = 0.0


def resolve_targets(a: ModelHandle, b: ModelHandle, probs_a: np.ndarray, probs_b: np.ndarray,
                    target: int | str | None) -> tuple[int, int, str]:
    """(class of A, class of B, note). None: each model's top class; a name: that class in both; an index:
    that index in both, only when the label lists are the same."""
    shared = shared_classes(a, b)
    top_a, top_b = int(np.argmax(probs_a)), int(np.argmax(probs_b))
    if target is None:
        if not shared:
            return top_a, top_b, ("The two models share no class, so each explains its own top class.")
        return top_a, top_b, "Each model explains its own top class."
    if isinstance(target, (int, np.integer)):
        if not same_labels(a, b):
            raise InputError("a class index applies to both models only when their label lists are the same; "
                             "name the class instead")
        if not 0 <= int(target) < a.num_classes:
            raise InputError(f"class index {target} out of range 0..{a.num_classes - 1}")
        return int(target), int(target), f"Both models explain class {a.labels[int(target)]} (#{int(target)})."
    name = str(target)
    if name not in shared:
        raise InputError(f"class {name!r} is not a class of both models"
                         + ("" if shared else " (they share no class)"))
    ia, ib = a.labels.index(name), b.labels.index(name)
    where = f"#{ia}" if ia == ib else f"#{ia} in A, #{ib} in B"
    return ia, ib, f"Both models explain class {name} ({where})."


def _topk(handle: ModelHandle, probs: np.ndarray, k: int = TOP_K) -> list[tuple[int, str, float]]:
    idx = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), handle.labels[i], float(probs[i])) for i in idx]


def compare_models(a: ModelHandle, b: ModelHandle, image: Image.Image, method: str,
                   target: int | str | None = None, params: dict[str, Any] | None = None,
                   progress: Callable[[float], None] | None = None) -> ModelComparison:
    """Compare models ``a`` and ``b`` on one PIL image with attribution ``method`` (registry name). ``params`` go
    to both runs; a layer parameter is left to each model's default (layers are per architecture)."""
    t0 = time.perf_counter()
    spec = get_spec(method)
    params = dict(params or {})
    layer_params = [p.name for p in spec.params if p.kind == "layer"]
    if any(params.get(p) is not None for p in layer_params):
        raise InputError("a layer is specific to one network: compare with each model's default layer")
    for p in layer_params:
        params.pop(p, None)
    xa, xb = a.input_tensor(image), b.input_tensor(image)
    pa, pb = a.predict(xa), b.predict(xb)
    ta, tb, note = resolve_targets(a, b, pa, pb, target)
    ra, rb, size = common_frame(a.preprocess, b.preprocess)
    sides = []
    for k, (h, x, t, p, r) in enumerate(((a, xa, ta, pa, ra), (b, xb, tb, pb, rb))):
        sub = None if progress is None else (lambda f, k=k: progress((k + min(max(float(f), 0.0), 1.0)) / 2))
        with torch.set_grad_enabled(True):
            attr = explain(h, x, t, method, progress=sub, **params)
        sides.append(ModelSide(h.key, h.name, _topk(h, p), t, h.labels[t], attr, resample_centre(attr.map, r, size)))
        if progress is not None:
            progress((k + 1) / 2)
    sa, sb = sides
    diff = unit_peak(sb.common) - unit_peak(sa.common)
    same = sa.label == sb.label
    return ModelComparison(sa, sb, method, bool(spec.signed), size, diff, spearman(sa.common, sb.common), same,
                           shared_classes(a, b), note, time.perf_counter() - t0)
