"""The batched occlusion scorer: one full forward pass per occluded copy of the image, in batches.

The reference engine (what captum does) and the fallback of the incremental one where a net cannot be traced. It
has the incremental engine's interface (``scores(x, base, corners, window, target, …)``), so every occlusion
method can run on either.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from models.handle import ModelHandle

from interpret.core.memory import oom_as_error, run_chunks
from interpret.core.tensors import cpu64, on_device
from interpret.engines.copies import fast_copy

Progress = Callable[[float], None] | None


class BatchedOcclusion:
    """Target scores of occluded copies of one image by plain batched forward passes.

    ``fast=False`` evaluates the shared net itself under its lock, one batch at a time (other sessions use the
    model in between), per image bit-for-bit as captum does. ``fast=True`` runs the private BN-folded channels-last
    copy (``copies.fast_copy``), 1.5–2.5× faster on CPU and rounding differently (≈1e-7 of the logits); the copy
    never carries hooks and an eval-mode forward changes no state, so it runs without the lock.
    """

    def __init__(self, handle: ModelHandle, fast: bool = False) -> None:
        self.handle = handle
        self.net: nn.Module = fast_copy(handle) if fast else handle.net
        self._clean: tuple[torch.Tensor, int, torch.Tensor] | None = None  # (image, its version, its logits)

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self.net is self.handle.net:
                with self.handle.lock:
                    return self.net(batch).float()
            return self.net(batch.contiguous(memory_format=torch.channels_last)).float()

    def scores(self, x: torch.Tensor, base: torch.Tensor, corners: Sequence[tuple[int, int]],
               window: tuple[int, int], target: int, batch_size: int = 64, progress: Progress = None
               ) -> tuple[float, np.ndarray, float, np.ndarray]:
        """Logit of ``target`` for ``x`` (1, 3, H, W) and for each copy of ``x`` whose (wh, ww) ``window`` at
        ``corners`` (top-left, clipped at the border as captum clips) is replaced by ``base``, and the same for the
        softmax probability: (logit0, logits (n,), prob0, probs (n,)). The copies are built batch by batch (memory
        stays at ``batch_size`` images); ``progress(fraction)`` is called per batch."""
        wh, ww = window
        x, base = on_device(self.net, x), on_device(self.net, base)
        clean = self._clean
        if clean is None or clean[0] is not x or clean[1] != x._version:  # coarse-to-fine levels reuse it
            with oom_as_error(x.device, "occlusion (the unoccluded image)"):
                clean = self._clean = (x, x._version, self._logits(x))
        out0 = clean[2]
        logit0 = float(out0[0, target])
        prob0 = float(torch.softmax(cpu64(out0), dim=1)[0, target])
        n = len(corners)
        logits = np.empty(n, dtype=np.float64)
        probs = np.empty(n, dtype=np.float64)
        def step(s: int, e: int) -> None:
            batch = x.expand(e - s, -1, -1, -1).clone()
            for b, (r, c) in enumerate(corners[s:e]):
                batch[b, :, r:r + wh, c:c + ww] = base[0, :, r:r + wh, c:c + ww]
            out = self._logits(batch)
            logits[s:e] = cpu64(out[:, target]).numpy()
            probs[s:e] = torch.softmax(cpu64(out), dim=1)[:, target].numpy()
            if progress is not None:
                progress(e / n)

        run_chunks(n, batch_size, step, device=x.device, what="occlusion (batched forward passes)",
                   hint="a smaller batch size, a larger window or stride, or the CPU")
        return logit0, logits, prob0, probs
