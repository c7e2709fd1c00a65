"""Build a model's fast-path copies once, before anyone clicks: the first click must not pay for them.

What the first run of a fast method paid before (default model, 2-core CPU; seconds of CPU time, one torch thread,
while other work shared the machine, so wall times were 2–15× longer):

- exact and approximate occlusion: a BN-folded ``torch.fx`` copy of the net (``copies.traced_copy``, ~0.1 s)
  and the first incremental pass, whose kernels and allocator pools are made on first use (+0.3 s over later
  passes of 40 windows);
- fast LIME: the same fx copy, then ``torch.jit`` trace + freeze + ``optimize_for_inference`` of it
  (``copies.frozen_copy``, ~0.6 s CPU; 17 s of wall time on a loaded machine).

``warm_up(handle)`` does all of this once per network and weights (keyed, like the caches it fills, by the shared
module and its parameters' versions) and runs each copy once on a synthetic image at the app's default settings —
one batch of windows only: it runs beside the user's first page and must not slow it (torch's threads are shared by
the whole process); about 1 s on the default model on an idle 2-core CPU.
Concurrent callers for one network wait for a single build; the shared network is only read (deep-copied under its
lock by ``traced_copy``). The UI starts it in a background thread when a model is selected and, if a click comes
first, waits for it (``wait``) with a progress bar. A network that ``torch.fx`` cannot trace has no fast paths to
build: its warm-up ends at once (the methods then use their batched fallbacks).
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from models.handle import ModelHandle

from interpret.core.tensors import device_of
from interpret.engines.copies import NotTraceable, copy_key, frozen_copy, traced_copy
from interpret.engines.incremental import IncrementalOcclusion, bf16_pays

__all__ = ["FAST_PATH_METHODS", "WarmupReport", "warm_up", "is_ready", "is_started", "progress_of", "wait"]

log = logging.getLogger("cnn_lens")

# Registry names of the methods that run on the copies built here (the UI waits for the warm-up before these).
FAST_PATH_METHODS = frozenset({"occlusion", "occlusion_approx", "lime_fast"})

# The app's defaults (window, stride, batch of windows, fast LIME's batch), so the kernels and allocator pools the
# first real run needs are made here. One full batch of windows: after a 16-window pass the approximate occlusion's
# first run (Compare's quick settings) still took 1.09 s against 0.68 s later, after a 64-window pass 0.82 s;
# the pass costs ~0.7 s.
_WINDOW, _STRIDE, _OCC_WINDOWS, _LIME_BATCH = 15, 8, 64, 5


@dataclass
class WarmupReport:
    """What the warm-up built and how long each step took (seconds of wall time)."""

    seconds: dict[str, float] = field(default_factory=dict)
    traceable: bool = True
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@dataclass
class _Entry:
    version: tuple
    started: bool = False
    fraction: float = 0.0
    step: str = "waiting"
    report: WarmupReport | None = None
    done: threading.Event = field(default_factory=threading.Event)


_ENTRIES: "weakref.WeakKeyDictionary[nn.Module, _Entry]" = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def _entry(handle: ModelHandle) -> _Entry:
    """The state for the network's current weights (a new one when they changed in place)."""
    version = copy_key(handle.net)  # weights and device: a copy on another device must be built again
    with _GUARD:
        e = _ENTRIES.get(handle.net)
        if e is None or e.version != version:
            e = _ENTRIES[handle.net] = _Entry(version)
        return e


def is_started(handle: ModelHandle) -> bool:
    """Whether a warm-up for the network's current weights has begun (or finished)."""
    return _entry(handle).started


def is_ready(handle: ModelHandle) -> bool:
    """Whether the warm-up for the network's current weights has finished: a fast method starts at once."""
    return _entry(handle).done.is_set()


def progress_of(handle: ModelHandle) -> tuple[float, str]:
    """(fraction done, name of the current step) of the network's warm-up."""
    e = _entry(handle)
    return e.fraction, e.step


def wait(handle: ModelHandle, timeout: float | None = None) -> bool:
    """Block until the network's warm-up has finished (True) or ``timeout`` seconds passed (False)."""
    return _entry(handle).done.wait(timeout)


def warm_up(handle: ModelHandle, progress: Callable[[float], None] | None = None) -> WarmupReport:
    """Build (once per network and weights) every private copy the fast methods use and run each once; return
    what was built and the seconds per step. A second caller, in any thread, waits for the first one's build and
    gets its report; ``progress(fraction)`` is called meanwhile. Never raises: a step that fails is recorded in
    ``errors`` and left to the method, which builds or falls back on its own as before."""
    e = _entry(handle)
    with _GUARD:
        owner = not e.started
        e.started = True
    if not owner:
        while not e.done.wait(0.05):
            if progress is not None:
                progress(e.fraction)
        return e.report  # type: ignore[return-value]
    try:
        e.report = _build(handle, e, progress)
    finally:
        e.fraction, e.step = 1.0, "done"
        if e.report is None:
            e.report = WarmupReport(errors={"warm-up": "interrupted"})
        e.done.set()
    return e.report


def _build(handle: ModelHandle, e: _Entry, progress: Callable[[float], None] | None) -> WarmupReport:
    report = WarmupReport()
    h, w = handle.input_size
    gen = torch.Generator().manual_seed(0)
    # any image will do: only shapes and kernels are being prepared (made on the CPU, run on the model's device)
    x = torch.randn(1, 3, h, w, generator=gen).to(device_of(handle))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("fx copy (batch norm folded)", lambda: traced_copy(handle)),
        ("occlusion engine, first pass", lambda: _occlusion_pass(handle, x, None)),
        ("frozen TorchScript copy", lambda: _frozen(handle, x)),
    ]
    if bf16_pays(x.device):  # the approximate occlusion's default only there
        steps.insert(2, ("occlusion engine, bfloat16 pass", lambda: _occlusion_pass(handle, x, torch.bfloat16)))
    for i, (name, run) in enumerate(steps):
        e.step = name
        t0 = time.perf_counter()
        try:
            run()
        except NotTraceable as err:  # nothing to build: the methods use their batched fallbacks
            report.traceable = False
            report.errors[name] = str(err)
            log.info("warm-up of %s: not traceable by torch.fx (%s)", handle.name, err)
            break
        except Exception as err:  # noqa: BLE001 - a warm-up must never break the app; the method will retry
            report.errors[name] = f"{type(err).__name__}: {err}"
            log.warning("warm-up of %s: %s failed: %s", handle.name, name, err)
        finally:
            report.seconds[name] = time.perf_counter() - t0
        e.fraction = (i + 1) / len(steps)
        if progress is not None:
            progress(e.fraction)
    log.info("warm-up of %s: %.2f s (%s)", handle.name, report.total,
             ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items()))
    return report


def _occlusion_pass(handle: ModelHandle, x: torch.Tensor, delta_dtype: torch.dtype | None) -> None:
    """One full batch of windows at the default window and stride."""
    H, W = x.shape[2], x.shape[3]
    if min(H, W) < _WINDOW:
        return
    rows = range(0, H - _WINDOW + 1, _STRIDE)
    cols = range(0, W - _WINDOW + 1, _STRIDE)
    corners = [(r, c) for r in rows for c in cols][:_OCC_WINDOWS]
    engine = IncrementalOcclusion(handle, delta_dtype=delta_dtype)
    engine.scores(x, torch.zeros_like(x), corners, _WINDOW, 0, _OCC_WINDOWS)


def _frozen(handle: ModelHandle, x: torch.Tensor) -> None:
    net = frozen_copy(handle, x.expand(_LIME_BATCH, -1, -1, -1))
    if x.device.type != "cpu":
        return  # no frozen copy off the CPU (copies.frozen_copy): the eager folded copy needs no first run
    with torch.inference_mode():
        net(x.expand(_LIME_BATCH, -1, -1, -1).contiguous(memory_format=torch.channels_last))
