"""Brush-to-test: hide a painted region of the photo, measure how the prediction changes, and compare that with
how much of each attribution map's positive mass the region holds ("What if I hide this?").

Coordinates. The user paints on the photo in its own pixels, and the edit is made there (``apply_edit``), so the
edited photo is a photo like any other and the model sees it through its usual preprocessing. Attribution maps
live at the model's input resolution (after resize and centre crop), so the painted mask is carried there by the
same preprocessing (``input_mask``): the mask, as a 0/255 image, goes through ``Preprocess.view``. Resizing is
linear with non-negative weights that sum to one, so each input pixel's mask value (/255) is the share of that
pixel's value that came from painted pixels — the weight the region shares use (quantized to 1/255). Painted
pixels outside the centre crop carry no weight: the model never sees them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from models.handle import ModelHandle

from interpret.attribution.lime import make_segmenter
from interpret.core.errors import InputError

FILLS = ("grey", "blur", "segment_mean")
FILL_LABELS = {"grey": "Grey (the model's mean colour)", "blur": "Blurred photo",
               "segment_mean": "Mean colour of each superpixel"}
GREY = (128, 128, 128)  # the grey used when no preprocessing mean is given
TRUNCATE = 4.0          # Gaussian kernel radius in σ (scipy's default)
TOP_K = 5

Rect = tuple[int, int, int, int]  # (x0, y0, x1, y1) in image pixels, half-open


def mean_grey(handle: ModelHandle) -> tuple[int, int, int]:
    """The colour whose normalized input is zero for this model: its preprocessing mean, in 0…255.

    The "grey" fill of the page uses it (not a flat 128), so a hidden region reads as "no evidence" to the
    model, as occlusion's zero patch does."""
    return tuple(int(round(min(max(m, 0.0), 1.0) * 255)) for m in handle.preprocess.mean)  # type: ignore[return-value]


def rect_mask(shape: tuple[int, int], rects: Sequence[Rect]) -> np.ndarray:
    """H×W bool mask of the union of ``rects`` (x0, y0, x1, y1; half-open, any corner order), clipped to the
    image; a rectangle outside the image or of zero area adds nothing."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in rects:
        xa, xb = sorted((int(x0), int(x1)))
        ya, yb = sorted((int(y0), int(y1)))
        xa, xb = max(xa, 0), min(xb, w)
        ya, yb = max(ya, 0), min(yb, h)
        if xa < xb and ya < yb:
            mask[ya:yb, xa:xb] = True
    return mask


def _check(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an H×W×3 uint8 image, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise InputError(f"the mask is {mask.shape[1]}×{mask.shape[0]} px but the image is "
                         f"{image.shape[1]}×{image.shape[0]} px")
    return image, mask


def blur_region(image: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """The Gaussian blur (σ px, reflected edges, per channel) of ``image`` on the painted pixels, as float64.

    Only the painted box plus the kernel radius is filtered: the filter is separable with a finite radius, so
    inside the box this equals blurring the whole photo."""
    ys, xs = np.nonzero(mask)
    r = int(TRUNCATE * float(sigma) + 0.5)
    y0, y1 = max(ys.min() - r, 0), min(ys.max() + 1 + r, image.shape[0])
    x0, x1 = max(xs.min() - r, 0), min(xs.max() + 1 + r, image.shape[1])
    crop = image[y0:y1, x0:x1].astype(np.float64)
    out = np.zeros(image.shape, dtype=np.float64)
    out[y0:y1, x0:x1] = ndimage.gaussian_filter(crop, sigma=(sigma, sigma, 0), mode="reflect", truncate=TRUNCATE)
    return out


def segment_means(image: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mean colour (float64, 0…255) of each segment id, one row per id 0…max."""
    ids = segments.ravel()
    n = int(ids.max()) + 1
    counts = np.bincount(ids, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(ids, weights=image[..., c].ravel().astype(np.float64), minlength=n)
                     for c in range(3)], axis=1)
    return sums / np.maximum(counts, 1.0)[:, None]


def segment_image(image: np.ndarray, segmentation: str = "slic", seed: int = 0) -> np.ndarray:
    """Superpixel ids 0…n−1 of ``image`` (H×W×3 uint8) with LIME's seeded segmenter (same defaults)."""
    return make_segmenter(segmentation, None, seed)(np.asarray(image))


def apply_edit(image: np.ndarray, mask: np.ndarray, fill: str, *, sigma: float = 8.0,
               grey: tuple[int, int, int] = GREY, segments: np.ndarray | None = None,
               segmentation: str = "slic", seed: int = 0) -> np.ndarray:
    """A copy of ``image`` (H×W×3 uint8) with the painted pixels (``mask``, H×W bool) replaced; others unchanged.

    fill: "grey" — the colour ``grey`` (the page passes ``mean_grey(handle)``; default 128); "blur" — the
    Gaussian blur of the photo with ``sigma`` px; "segment_mean" — the mean colour of the whole superpixel each
    painted pixel lies in (``segments``, or computed with LIME's ``segmentation`` and ``seed``). Values are
    rounded to the nearest integer.
    """
    image, mask = _check(image, mask)
    if fill not in FILLS:
        raise InputError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    out = image.copy()
    if not mask.any():
        return out
    if fill == "grey":
        g = np.asarray(grey, dtype=np.int64)
        if g.shape != (3,) or g.min() < 0 or g.max() > 255:
            raise InputError(f"grey must be three values in 0…255, got {grey!r}")
        out[mask] = g.astype(np.uint8)
    elif fill == "blur":
        if not float(sigma) > 0:
            raise InputError(f"the blur radius σ must be positive, got {sigma}")
        out[mask] = np.clip(np.rint(blur_region(image, mask, sigma)[mask]), 0, 255).astype(np.uint8)
    else:
        seg = segment_image(image, segmentation, seed) if segments is None else np.asarray(segments)
        if seg.shape != mask.shape or seg.dtype.kind not in "iu" or seg.min() < 0:
            raise InputError(f"segments must be non-negative integer ids of shape {mask.shape}")
        means = segment_means(image, seg)
        out[mask] = np.clip(np.rint(means[seg[mask]]), 0, 255).astype(np.uint8)
    return out


def input_mask(mask: np.ndarray, handle: ModelHandle) -> np.ndarray:
    """The painted mask (image pixels, H×W bool) at the model's input resolution, as weights in [0, 1] (see the
    module doc): the mask goes through the very resize and crop that the photo goes through."""
    m = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L")
    return np.asarray(handle.preprocess.view(m), dtype=np.float64)[..., 0] / 255.0


def crop_box(handle: ModelHandle, width: int, height: int) -> tuple[float, float, float, float]:
    """The part of a width×height photo the model sees, (x0, y0, x1, y1) in photo pixels, clipped to the photo:
    the centre crop of its preprocessing (shorter side resized to ``resize``, the other in proportion, rounded
    down; crop offsets rounded — torchvision's arithmetic), mapped back to the photo. For drawing only: the
    shares use ``input_mask``, which needs no geometry."""
    p = handle.preprocess
    short, long = min(width, height), max(width, height)
    new_short, new_long = p.resize, int(p.resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    left, top = int(round((new_w - p.crop) / 2.0)), int(round((new_h - p.crop) / 2.0))
    sx, sy = width / new_w, height / new_h
    return (max(left * sx, 0.0), max(top * sy, 0.0), min((left + p.crop) * sx, float(width)),
            min((top + p.crop) * sy, float(height)))


def input_rects(handle: ModelHandle, width: int, height: int,
                rects: Sequence[Rect]) -> list[tuple[float, float, float, float]]:
    """The painted rectangles in the model's input pixels (through ``crop_box``; clipped to the input, those the
    model does not see dropped), to outline the region on the maps."""
    bx0, by0, bx1, by1 = crop_box(handle, width, height)
    crop = handle.preprocess.crop
    sx, sy = crop / max(bx1 - bx0, 1e-9), crop / max(by1 - by0, 1e-9)
    out = []
    for x0, y0, x1, y1 in rects:
        xa, xb = sorted(((x0 - bx0) * sx, (x1 - bx0) * sx))
        ya, yb = sorted(((y0 - by0) * sy, (y1 - by0) * sy))
        xa, xb, ya, yb = max(xa, 0.0), min(xb, crop), max(ya, 0.0), min(yb, crop)
        if xa < xb and ya < yb:
            out.append((xa, ya, xb, yb))
    return out


@dataclass(frozen=True)
class Share:
    """The share of a map's positive mass inside the region (``value`` in [0, 1]), or None with the ``reason``."""

    value: float | None
    reason: str = ""


def region_share(attr_map: np.ndarray, mask: np.ndarray) -> Share:
    """Positive mass of ``attr_map`` inside ``mask`` / the map's whole positive mass.

    ``mask`` is bool or weights in [0, 1] of the map's shape (``input_mask``); negative values of a signed map
    count as zero. A map with non-finite values, or without positive mass (all zero, all negative), has no
    share: ``value`` None and a reason instead of a NaN."""
    a = np.asarray(attr_map, dtype=np.float64)
    w = np.asarray(mask, dtype=np.float64)
    if a.shape != w.shape:
        raise InputError(f"the mask is {w.shape} but the map is {a.shape}; carry the mask to the model's input "
                         "first (input_mask)")
    if not np.isfinite(a).all():
        return Share(None, "the map has non-finite values")
    pos = np.clip(a, 0.0, None)
    total = pos.sum()
    if not total > 0:
        return Share(None, "the map has no positive mass (all zero or negative)")
    return Share(float(min(max((pos * np.clip(w, 0.0, 1.0)).sum() / total, 0.0), 1.0)))


@dataclass
class EditEffect:
    """What hiding the painted region did: the target's probability before and after, the top-5 classes before
    and after (index, label, probability), the region's area share of the model's input, and per method the
    share of the map's positive mass in the region (a map that is right predicts a big drop where it is big)."""

    target: int
    label: str
    p_before: float
    p_after: float
    top_before: list[tuple[int, str, float]]
    top_after: list[tuple[int, str, float]]
    area_share: float
    shares: dict[str, Share] = field(default_factory=dict)
    probs_before: np.ndarray | None = field(default=None, repr=False)
    probs_after: np.ndarray | None = field(default=None, repr=False)

    @property
    def change(self) -> float:
        """p_after − p_before of the target (negative: hiding the region lowered it)."""
        return self.p_after - self.p_before


def _top(p: np.ndarray, labels: list[str], k: int = TOP_K) -> list[tuple[int, str, float]]:
    idx = np.argsort(-p, kind="stable")[:k]
    return [(int(i), labels[int(i)], float(p[i])) for i in idx]


def edit_effect(handle: ModelHandle, original: Image.Image, edited: Image.Image, mask: np.ndarray, target: int,
                maps: dict[str, np.ndarray] | None = None, probs_before: np.ndarray | None = None) -> EditEffect:
    """Predict ``edited`` (and ``original``, unless its probabilities are given) and measure every map's share of
    the painted region (``mask`` in image pixels; ``maps`` at input resolution, computed on ``original``)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (original.height, original.width):
        raise InputError(f"the mask is {mask.shape[1]}×{mask.shape[0]} px but the photo is "
                         f"{original.width}×{original.height} px")
    if not 0 <= int(target) < handle.num_classes:
        raise InputError(f"class {target} out of range 0..{handle.num_classes - 1}")
    pb = handle.predict(original) if probs_before is None else np.asarray(probs_before)
    pa = handle.predict(edited)
    w = input_mask(mask, handle)
    t = int(target)
    return EditEffect(target=t, label=handle.labels[t], p_before=float(pb[t]), p_after=float(pa[t]),
                      top_before=_top(pb, handle.labels), top_after=_top(pa, handle.labels),
                      area_share=float(w.mean()),
                      shares={m: region_share(a, w) for m, a in (maps or {}).items()},
                      probs_before=pb, probs_after=pa)
