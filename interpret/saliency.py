"""Vanilla gradient maps (Simonyan et al. 2014): the gradient of the target *logit* w.r.t. the input pixels.

Three views of one backward pass: ``saliency`` (|∂y/∂x| max over colour channels, the paper's map),
``gradient`` (signed, summed over channels) and ``grad_x_input`` (gradient × normalized input, summed over
channels). Written directly rather than through captum's Saliency: it is one ``autograd.grad`` call, and
``autograd.grad`` (not ``backward``) never touches the shared model's ``.grad`` buffers. No hooks are used, so
these run concurrently on a shared model without taking its lock.
"""
from __future__ import annotations

import numpy as np
import torch

from models.handle import ModelHandle

from .result import Attribution


def check_input(x: torch.Tensor) -> None:
    """x must be one normalized image (1, 3, H, W)."""
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected a normalized input of shape (1, C, H, W), got {tuple(getattr(x, 'shape', ()))}")


def target_score(logits: torch.Tensor, target: int) -> torch.Tensor:
    """The target logit of every batch row, summed (rows are independent in eval mode)."""
    if logits.dim() != 2:
        raise ValueError(f"the network must return logits of shape (N, classes), got {tuple(logits.shape)}")
    if not 0 <= int(target) < logits.shape[1]:
        raise ValueError(f"target class {target} out of range 0..{logits.shape[1] - 1}")
    return logits[:, int(target)].sum()


def input_gradient(net: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """∂ logit[target] / ∂x for a batch x (each row's own gradient), detached, same shape as x."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score = target_score(net(xg), target)
        (g,) = torch.autograd.grad(score, xg)
    return g.detach()


def to_hwc(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) tensor → H×W×3 float32 array."""
    t = t.detach()
    if t.dim() == 4:
        t = t[0]
    return t.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def max_abs_channels(t: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) → H×W: max over channels of |value| (the classic saliency reduction)."""
    return t.detach()[0].abs().amax(0).cpu().numpy()


def saliency(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """|∂y_c/∂x| max over colour channels (unsigned). extra["rgb"]: the signed per-channel gradient."""
    check_input(x)
    g = input_gradient(handle.net, x, target)
    return Attribution("saliency", int(target), max_abs_channels(g), signed=False, extra={"rgb": to_hwc(g)})


def gradient(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """Signed gradient ∂y_c/∂x summed over colour channels."""
    check_input(x)
    g = input_gradient(handle.net, x, target)
    return Attribution("gradient", int(target), g[0].sum(0).cpu().numpy(), signed=True,
                       extra={"rgb": to_hwc(g)})


def grad_x_input(handle: ModelHandle, x: torch.Tensor, target: int) -> Attribution:
    """Gradient × input (normalized input space), summed over colour channels; signed."""
    check_input(x)
    g = input_gradient(handle.net, x, target)
    gx = g * x.detach()
    return Attribution("grad_x_input", int(target), gx[0].sum(0).cpu().numpy(), signed=True,
                       extra={"rgb": to_hwc(gx)})
