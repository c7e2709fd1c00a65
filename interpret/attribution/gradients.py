"""Vanilla gradient maps (Simonyan et al. 2014): the gradient of the target *logit* w.r.t. the input pixels.

Three views of one backward pass: ``saliency`` (|∂y/∂x| max over colour channels, the paper's map),
``gradient`` (signed, summed over channels) and ``grad_x_input`` (gradient × normalized input, summed over
channels). Written directly rather than through captum's Saliency: it is one ``autograd.grad`` call, and
``autograd.grad`` (not ``backward``) never touches the shared model's ``.grad`` buffers. No hooks are used, so
these run concurrently on a shared model without taking its lock.
"""
from __future__ import annotations

import torch

from models.handle import ModelHandle

from interpret.core.result import Attribution
from interpret.core.tensors import check_input, input_gradient, max_abs_channels, on_device, to_hwc, to_numpy


def saliency(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """|∂y_c/∂x| max over colour channels (unsigned). extra["rgb"]: the signed per-channel gradient."""
    check_input(x)
    x = on_device(handle, x)
    g = input_gradient(handle.net, x, target)
    return Attribution("saliency", int(target), max_abs_channels(g), signed=False, extra={"rgb": to_hwc(g)})


def gradient(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """Signed gradient ∂y_c/∂x summed over colour channels."""
    check_input(x)
    x = on_device(handle, x)
    g = input_gradient(handle.net, x, target)
    return Attribution("gradient", int(target), to_numpy(g[0].sum(0)), signed=True,
                       extra={"rgb": to_hwc(g)})


def grad_x_input(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """Gradient × input (normalized input space), summed over colour channels; signed."""
    check_input(x)
    x = on_device(handle, x)
    g = input_gradient(handle.net, x, target)
    gx = g * x.detach()
    return Attribution("grad_x_input", int(target), to_numpy(gx[0].sum(0)), signed=True,
                       extra={"rgb": to_hwc(gx)})
