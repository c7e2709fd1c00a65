"""Per-call hooks on a shared model: registered under the model's lock, active only for the owning thread,
removed in ``finally`` whatever happens.

Streamlit shares one cached model between sessions and threads. A hook left on it, or one that fires during
another thread's forward pass, would corrupt somebody else's result; this module makes both impossible.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


class HookSet:
    """Hooks of one call. Each hook runs only in the thread that registered it."""

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._owner = threading.get_ident()

    def _guard(self, fn: Callable) -> Callable:
        owner = self._owner

        def wrapped(*args):
            if threading.get_ident() != owner:
                return None
            return fn(*args)

        return wrapped

    def forward(self, module: nn.Module, fn: Callable) -> None:
        """fn(module, inputs, output) → None or a replacement output."""
        self._handles.append(module.register_forward_hook(self._guard(fn)))

    def forward_pre(self, module: nn.Module, fn: Callable) -> None:
        """fn(module, inputs) → None or replacement inputs."""
        self._handles.append(module.register_forward_pre_hook(self._guard(fn)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@contextmanager
def hooked(handle_or_lock) -> Iterator[HookSet]:
    """Hold the model's lock, hand out a HookSet, and remove every hook on exit (also on error).

    Accepts a ModelHandle (uses its ``lock``) or a bare lock.
    """
    lock = getattr(handle_or_lock, "lock", handle_or_lock)
    with lock:
        hs = HookSet()
        try:
            yield hs
        finally:
            hs.remove()


def count_hooks(net: nn.Module) -> int:
    """Number of hooks attached anywhere in ``net`` (tests assert this is back to its old value)."""
    n = 0
    for m in net.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {}))
    return n
