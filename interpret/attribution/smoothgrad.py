"""SmoothGrad (Smilkov et al. 2017): the input gradient averaged over noisy copies of the image.

Written here rather than with captum's NoiseTunnel because NoiseTunnel draws its noise from torch's *global*
generator: a per-call seed would then race other threads. Here the noise comes from a private
``torch.Generator`` seeded by ``seed``, so the same seed gives the same map in any thread. The noisy copies
go through the network in batches of ``batch_size`` (one backward per batch; rows are independent in eval
mode).
"""
from __future__ import annotations

import torch

from models.handle import ModelHandle

from interpret.core.errors import InputError
from interpret.core.result import Attribution
from interpret.core.memory import run_chunks
from interpret.core.tensors import check_input, input_gradient, max_abs_channels, on_device, to_hwc


def noise_batch(x: torch.Tensor, samples: int, noise: float, seed: int) -> torch.Tensor:
    """``samples`` noisy copies of x (samples, C, H, W): σ = noise · (max(x) − min(x)). The noise is drawn on the
    CPU by the seeded generator and moved to x's device, so every device gets the same noise."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    sigma = float(noise) * float(x.max() - x.min())
    eps = torch.randn((int(samples),) + tuple(x.shape[1:]), generator=gen, dtype=x.dtype)
    return x.detach() + sigma * eps.to(x.device)


def smoothgrad(handle: ModelHandle, x: torch.Tensor, target: int, samples: int = 25, noise: float = 0.15,
               squared: bool = False, batch_size: int = 8, seed: int = 0, progress=None) -> Attribution:
    """Mean gradient over ``samples`` noisy inputs (SmoothGrad-SQ: mean of squared gradients if ``squared``).

    map = max |mean gradient| over colour channels (unsigned); extra["rgb"]: the per-channel mean."""
    check_input(x)
    if samples < 1 or batch_size < 1:
        raise InputError("samples and batch_size must be at least 1")
    x = on_device(handle, x)
    xs = noise_batch(x, samples, noise, seed)
    total = torch.zeros_like(x[0])

    def step(s: int, e: int) -> None:
        nonlocal total
        g = input_gradient(handle.net, xs[s:e], target)
        total = total + (g * g if squared else g).sum(0)
        if progress is not None:
            progress(e / samples)

    run_chunks(samples, batch_size, step, device=x.device, what="SmoothGrad",
               hint="fewer samples, a smaller batch size or the CPU")
    mean = (total / samples)[None]
    return Attribution("smoothgrad", int(target), max_abs_channels(mean), signed=False,
                       params={"samples": int(samples), "noise": float(noise), "squared": bool(squared),
                               "seed": int(seed)},
                       extra={"rgb": to_hwc(mean)})
