"""Tensor helpers every gradient method shares: the input check, the target logit, one input gradient, the move of
inputs to the model's device, and the conversions of a (1, C, H, W) result to the CPU arrays an ``Attribution``
holds.

Kept on the bottom floor so that attribution methods (and anything above) use one definition of "a valid input"
and "the score of class c" instead of importing them from one another.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from interpret.core.errors import InputError, NotDefined
from models.device import module_device


def device_of(handle_or_net) -> torch.device:
    """The device a handle's network (or a bare network) lives on."""
    net = getattr(handle_or_net, "net", handle_or_net)
    return module_device(net) if isinstance(net, nn.Module) else torch.device("cpu")


def on_device(handle_or_net, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of the handle's network (no copy when it is there already); every public function
    that takes an input tensor calls this at its entry. The dtype is kept (a float64 input stays float64)."""
    return x.to(device_of(handle_or_net))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor on any device → CPU numpy (detached); the one way results leave the device."""
    return t.detach().cpu().numpy()


def wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached in float64 for an accurate reduction: on its own device where float64 exists, on the CPU on
    Apple MPS (which has none)."""
    t = t.detach()
    return (t.cpu() if t.device.type == "mps" else t).double()


def cpu64(t: torch.Tensor) -> torch.Tensor:
    """A result tensor brought to the CPU, then widened to float64 (Apple MPS has no float64, so widening for a
    float64 softmax or score always happens after the move)."""
    return t.detach().cpu().double()


def check_input(x: torch.Tensor) -> None:
    """x must be one normalized image (1, 3, H, W)."""
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[0] != 1:
        raise InputError(f"expected a normalized input of shape (1, C, H, W), got {tuple(getattr(x, 'shape', ()))}")


def check_target(target: int, n_classes: int) -> None:
    """``target`` must be a class index 0..n_classes − 1."""
    if not 0 <= int(target) < n_classes:
        raise InputError(f"target class {target} out of range 0..{n_classes - 1}")


def target_score(logits: torch.Tensor, target: int) -> torch.Tensor:
    """The target logit of every batch row, summed (rows are independent in eval mode)."""
    if logits.dim() != 2:
        raise NotDefined(f"the network must return logits of shape (N, classes), got {tuple(logits.shape)}")
    check_target(target, logits.shape[1])
    return logits[:, int(target)].sum()


def input_gradient(net: torch.nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """∂ logit[target] / ∂x for a batch x (each row's own gradient), detached, same shape as x.

    ``autograd.grad`` (not ``backward``) never touches the shared model's ``.grad`` buffers."""
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
    return to_numpy(t.detach()[0].abs().amax(0))
