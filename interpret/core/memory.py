"""Batched loops that survive running out of device memory: on ``torch.OutOfMemoryError`` the device's cache is
emptied and the same chunk is tried again with half the batch, down to one; if one item still does not fit, a
``DeviceOutOfMemory`` names the device, the computation and what to try.

Every batched engine (occlusion, LIME, top-patch scans, SmoothGrad samples, deletion/insertion) runs its loop
through ``run_chunks``; a computation whose batching happens inside a library call (captum's integrated gradients,
``internal_batch_size``) goes through ``with_batch_retry``, which applies the same rule to the whole call.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

from interpret.core.errors import DeviceOutOfMemory

T = TypeVar("T")

__all__ = ["is_out_of_memory", "release_cached_memory", "oom_as_error", "run_chunks", "with_batch_retry"]


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError`` (also what CPU allocation failures raise in torch) or MPS's RuntimeError."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def release_cached_memory(device: torch.device) -> None:
    """Give the device's cached blocks back so a smaller retry can use them."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps") and hasattr(torch.mps, "empty_cache"):
        torch.mps.empty_cache()


def _too_big(device: torch.device, what: str, hint: str) -> DeviceOutOfMemory:
    return DeviceOutOfMemory(f"out of memory on device {device} while computing {what}, even at batch size 1; "
                             f"try {hint}")


def _even(n: int, batch: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + batch)) for s in range(0, n, batch)]


def run_chunks(n: int, batch: int, step: Callable[[int, int], None], *, device: torch.device | str,
               what: str, hint: str = "a smaller image, fewer samples or windows, or the CPU",
               plan: Callable[[int, int], list[tuple[int, int]]] | None = None) -> int:
    """Call ``step(start, stop)`` over 0..n in chunks of at most ``batch`` items, halving the batch on OOM.

    ``step`` must store its chunk's result only after computing it (an OOM part-way leaves nothing behind), so a
    retried chunk is counted exactly once in the result. After an OOM the rest of the loop (from the failed chunk
    on) is re-planned with the smaller batch. ``plan(m, batch)`` → [(start, stop), …] covering 0..m splits a loop
    other than evenly (default: chunks of ``batch``). Returns the batch size finally used."""
    device = torch.device(device)
    batch = max(1, int(batch))
    plan = plan or _even
    done = 0
    while done < n:
        for s, e in plan(n - done, batch):
            s, e = s + done, e + done
            try:
                step(s, e)
            except Exception as err:  # noqa: BLE001 — only OOM is handled, anything else propagates as it is
                if not is_out_of_memory(err):
                    raise
                del err
                release_cached_memory(device)
                if e - s <= 1:
                    raise _too_big(device, what, hint) from None
                batch = max(1, (e - s) // 2)
                done = s
                break
        else:
            done = n
    return batch


def with_batch_retry(fn: Callable[[int], T], batch: int, *, device: torch.device | str, what: str,
                     hint: str = "a smaller image, fewer steps or samples, or the CPU") -> T:
    """``fn(batch)``, called again with half the batch after an OOM (down to 1); ``DeviceOutOfMemory`` if even
    ``fn(1)`` does not fit. ``fn`` must have no effect when it fails (it is simply called again)."""
    device = torch.device(device)
    batch = max(1, int(batch))
    while True:
        try:
            return fn(batch)
        except Exception as err:  # noqa: BLE001 — only OOM is handled
            if not is_out_of_memory(err):
                raise
            del err
            release_cached_memory(device)
            if batch <= 1:
                raise _too_big(device, what, hint) from None
            batch //= 2


@contextmanager
def oom_as_error(device: torch.device | str, what: str,
                 hint: str = "a smaller image, fewer samples or steps, or the CPU") -> Iterator[None]:
    """Inside the block, running out of device memory (a single pass: nothing to halve) raises
    ``DeviceOutOfMemory`` with the device, ``what`` and ``hint``, after the device's cache is released."""
    device = torch.device(device)
    try:
        yield
    except Exception as err:  # noqa: BLE001 — only OOM is translated
        if not is_out_of_memory(err):
            raise
        del err
        release_cached_memory(device)
        raise DeviceOutOfMemory(f"out of memory on device {device} while computing {what}; try {hint}") from None
