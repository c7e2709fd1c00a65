"""LIME for images (Ribeiro et al. 2016) through the ``lime`` package: superpixels switched on and off at random,
a weighted linear model of the target probability fitted on the on/off pattern, its weights painted on the segments.

Two pitfalls of lime 0.2.0.1 with scikit-image ≥ 0.22 are worked around here:
- lime seeds quickshift with ``random_seed=``, which scikit-image renamed to ``rng``; lime's parameter filter drops
  the unknown name silently, so the segmentation ignores the seed. We build the ``SegmentationAlgorithm`` ourselves
  with ``rng=seed``.
- lime assumes segment labels 0…n−1; ``slic`` starts at 1, so one superpixel would never be switched off. We
  relabel every segmentation to 0…n−1.
"""
from __future__ import annotations

import inspect
import time
from typing import Any, Callable

import numpy as np
import torch
from lime.lime_image import LimeImageExplainer
from lime.wrappers.scikit_image import SegmentationAlgorithm
from skimage import segmentation as skseg

from models.handle import ModelHandle

from interpret.core.errors import InputError
from interpret.core.memory import run_chunks
from interpret.core.result import Attribution
from interpret.core.tensors import device_of, to_numpy

SEGMENTATIONS = ("quickshift", "slic", "felzenszwalb")

# quickshift: lime's own defaults; slic / felzenszwalb: settings giving a few dozen superpixels at 224².
DEFAULT_SEG_PARAMS: dict[str, dict[str, Any]] = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 50, "compactness": 10.0, "sigma": 1.0, "start_label": 0},
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
}


# Named fills for switched-off superpixels (the UI offers these names); "mean" is lime's default.
HIDE_COLORS: dict[str, float | None] = {"mean": None, "black": 0.0, "grey": 0.5, "white": 1.0}


def make_segmenter(segmentation: str = "quickshift", seg_params: dict | None = None,
                   seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A seeded lime ``SegmentationAlgorithm`` whose output is relabelled to 0…n−1.

    An unknown algorithm or parameter name raises InputError (lime would drop unknown names silently).
    """
    if segmentation not in SEGMENTATIONS:
        raise InputError(f"unknown segmentation {segmentation!r}; choose one of {SEGMENTATIONS}")
    fn = getattr(skseg, segmentation)
    params = {**DEFAULT_SEG_PARAMS[segmentation], **(seg_params or {})}
    valid = set(inspect.signature(fn).parameters) - {"image", "channel_axis", "return_tree", "mask"}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise InputError(f"{segmentation} does not take {unknown}; valid: {sorted(valid)}")
    if "rng" in valid:
        params.setdefault("rng", seed)
    algo = SegmentationAlgorithm(segmentation, **params)

    def segment(image: np.ndarray) -> np.ndarray:
        seg = np.asarray(algo(image))
        return np.unique(seg, return_inverse=True)[1].reshape(seg.shape).astype(np.int64)

    return segment


def lime_explain(handle: ModelHandle, x: torch.Tensor, target: int, segmentation: str = "quickshift",
                 seg_params: dict | None = None, num_samples: int = 1000,
                 hide_color: str | float | tuple[float, float, float] | None = None, seed: int = 0,
                 batch_size: int = 10, num_top: int = 5,
                 progress: Callable[[float], None] | None = None) -> Attribution:
    """LIME weights of the superpixels for the target's softmax probability, painted on their segments (signed).

    Works in display space ([0, 1] RGB): ``hide_color`` None fills a switched-off superpixel with its mean colour
    (lime's default), a number or an RGB triple in [0, 1] fills it with that colour. ``seed`` seeds both the
    segmentation (quickshift's tie-breaking) and lime's sampling, so the same seed gives the same result.
    ``extra``: "segments" (H×W int), "weights" {segment: weight}, "top_positive"/"top_negative" (up to ``num_top``
    segment ids, strongest first), "score" (weighted R² of the linear fit), "intercept", "local_pred".
    """
    t0 = time.perf_counter()
    target = int(target)
    image = handle.preprocess.to_display(x[0]).astype(np.float64)
    segmenter = make_segmenter(segmentation, seg_params, seed)
    hide_color = HIDE_COLORS.get(hide_color, hide_color) if isinstance(hide_color, str) else hide_color
    done = [0]
    limit: list[int | None] = [None]
    device = device_of(handle)

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), handle.num_classes), dtype=np.float64)

        def step(s: int, e: int) -> None:
            batch = torch.from_numpy(np.ascontiguousarray(images[s:e], dtype=np.float32)).permute(0, 3, 1, 2)
            batch = handle.preprocess.normalize(batch.to(device))
            with handle.lock, torch.inference_mode():
                probs = torch.softmax(handle.net(batch).float(), dim=1)
            out[s:e] = to_numpy(probs)  # float32 → float64 on the CPU

        # after an out-of-memory retry, later batches start at the size that fitted
        limit[0] = run_chunks(len(images), min(len(images), limit[0] or len(images)), step, device=device,
                              what="LIME", hint="a smaller batch size, fewer samples or the CPU")
        done[0] += len(images)
        if progress is not None:
            progress(min(done[0] / num_samples, 1.0))
        return out

    explainer = LimeImageExplainer(random_state=seed)
    exp = explainer.explain_instance(
        image, classifier_fn, labels=(target,), hide_color=hide_color, top_labels=None, num_samples=num_samples,
        batch_size=batch_size, segmentation_fn=segmenter, random_seed=seed)
    segments = np.asarray(exp.segments, dtype=np.int64)
    weights = {int(s): float(w) for s, w in exp.local_exp[target]}
    lut = np.zeros(int(segments.max()) + 1, dtype=np.float64)
    for s, w in weights.items():
        lut[s] = w
    ranked = sorted(weights.items(), key=lambda kv: kv[1])
    return Attribution(
        method="lime", target=target, map=lut[segments], signed=True,
        params={"segmentation": segmentation, "seg_params": dict(seg_params or {}), "num_samples": num_samples,
                "hide_color": hide_color, "seed": seed},
        extra={"segments": segments, "weights": weights,
               "top_positive": [s for s, w in reversed(ranked) if w > 0][:num_top],
               "top_negative": [s for s, w in ranked if w < 0][:num_top],
               "score": float(exp.score), "intercept": float(exp.intercept[target]),
               "local_pred": float(np.ravel(exp.local_pred)[0])},
        seconds=time.perf_counter() - t0)
