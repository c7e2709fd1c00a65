"""Integrated Gradients (Sundararajan et al. 2017) with captum's ``IntegratedGradients``.

Only the baseline choice is ours. captum computes input gradients with ``autograd.grad`` (no hooks, no
``.grad`` on the model), so it is safe on a shared model without the lock. The map is the attribution summed
over colour channels (signed); by completeness its total is ≈ logit(x) − logit(baseline), and the gap is
reported as ``extra["delta"]``.
"""
from __future__ import annotations

import torch
import torchvision.transforms.functional as TF
from captum.attr import IntegratedGradients

from models.handle import ModelHandle

from interpret.core.errors import InputError
from interpret.core.result import Attribution
from interpret.core.memory import with_batch_retry
from interpret.core.tensors import check_input, check_target, on_device, to_hwc, to_numpy

BASELINES = ("black", "zero", "blur", "noise", "white")


def make_baseline(handle: ModelHandle, x: torch.Tensor, kind: str = "black", seed: int = 0) -> torch.Tensor:
    """Baseline in normalized input space.

    black/white: a black/white image; zero: all-zero model input (the dataset's mean colour for torchvision
    models); blur: the image blurred with a Gaussian (σ = 1/20 of the width); noise: uniform [0, 1] pixels
    drawn with ``seed``."""
    pp = handle.preprocess
    if kind == "zero":
        return torch.zeros_like(x)
    if kind in ("black", "white"):
        return pp.normalize(torch.full_like(x, 0.0 if kind == "black" else 1.0))
    if kind == "blur":
        sigma = max(1.0, x.shape[-1] / 20)
        k = int(2 * round(3 * sigma) + 1)
        return TF.gaussian_blur(x.detach(), [k, k], [sigma, sigma])
    if kind == "noise":
        gen = torch.Generator().manual_seed(int(seed))
        # drawn on the CPU with the seeded generator, then moved: the same noise on every device
        return pp.normalize(torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device))
    raise InputError(f"unknown baseline {kind!r}; choose one of {BASELINES}")


def integrated_gradients(handle: ModelHandle, x: torch.Tensor, target: int, steps: int = 32,
                         baseline: str = "black", rule: str = "gausslegendre", batch_size: int = 16,
                         seed: int = 0) -> Attribution:
    """IG from ``baseline`` to x along the straight line, ``steps`` points, quadrature ``rule`` (captum's
    ``method``, renamed so that it cannot clash with the method name passed to ``explain``).

    map: attribution summed over colour channels (signed); extra["rgb"]: per channel; extra["delta"]:
    completeness gap Σ attribution − (logit(x) − logit(baseline))."""
    check_input(x)
    check_target(target, handle.num_classes)
    x = on_device(handle, x)
    b = make_baseline(handle, x, baseline, seed)
    ig = IntegratedGradients(handle.net)
    attr, delta = with_batch_retry(
        lambda bs: ig.attribute(x.detach().clone(), baselines=b, target=int(target), n_steps=int(steps),
                                method=rule, internal_batch_size=bs, return_convergence_delta=True),
        int(batch_size), device=x.device, what="integrated gradients", hint="fewer steps, a smaller image or the CPU")
    attr = attr.detach()
    return Attribution("integrated_gradients", int(target), to_numpy(attr[0].sum(0)), signed=True,
                       params={"steps": int(steps), "baseline": baseline, "rule": rule, "seed": int(seed)},
                       extra={"rgb": to_hwc(attr), "delta": float(delta.reshape(-1)[0]),
                              "baseline_image": handle.preprocess.to_display(b[0])})
