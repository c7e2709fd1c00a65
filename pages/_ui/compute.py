"""Process-wide, bounded result caches with progress bars (results keyed by model + image + target + params), and
the background warm-up of each model's fast paths.

``st.cache_data`` would replay the progress bar drawn inside a cached function; this LRU keeps the bar
outside and bounds memory by entry count.
"""
from __future__ import annotations

import atexit
import json
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable

import streamlit as st

from interpret.engines import warmup
from models import ModelHandle

log = logging.getLogger("cnn_lens")


class LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


@st.cache_resource(show_spinner=False)
def result_cache(name: str, size: int) -> LRU:
    """The process-wide LRU named ``name`` (created with ``size`` entries on first use)."""
    return LRU(size)


def cache_key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def cached(name: str, key: str, compute: Callable[[Callable[[float], None] | None], Any], *,
           label: str = "Computing…", progress: bool = True, size: int = 64,
           before: Callable[[], None] | None = None) -> Any:
    """The cached value for ``key``, or ``compute(progress_callback)`` shown with a progress bar. ``before`` runs
    first, on a miss only (e.g. waiting for the model's warm-up)."""
    lru = result_cache(name, size)
    hit = lru.get(key)
    if hit is not None:
        return hit
    if before is not None:
        before()
    bar = st.progress(0.0, text=label) if progress else None

    def report(frac: float) -> None:
        if bar is not None:
            bar.progress(min(max(float(frac), 0.0), 1.0), text=label)

    try:
        with st.spinner(label, show_time=True):
            value = compute(report)
    finally:
        if bar is not None:
            bar.empty()
    lru.put(key, value)
    return value


# ---- warm-up of the fast paths -----------------------------------------------------------------------------------

_THREADS: list[threading.Thread] = []
_THREADS_LOCK = threading.Lock()


def start_warm_up(handle: ModelHandle) -> None:
    """Build the model's fast-path copies (``interpret.engines.warmup``) in a background thread, once per model and
    weights; called whenever a page gets its model, so the first click on a fast method finds them ready."""
    if warmup.is_started(handle):
        return
    with _THREADS_LOCK:
        if warmup.is_started(handle):
            return
        _THREADS[:] = [t for t in _THREADS if t.is_alive()]
        t = threading.Thread(target=warmup.warm_up, args=(handle,), name=f"cnn-lens warm-up {handle.key}",
                             daemon=True)
        _THREADS.append(t)
        t.start()
        while not warmup.is_started(handle) and t.is_alive():  # claimed before returning: no second thread
            t.join(0.001)


@atexit.register
def _join_warm_ups() -> None:
    """Let running warm-ups finish before the interpreter tears torch down (a daemon thread killed inside a
    TorchScript freeze can crash the exit)."""
    for t in list(_THREADS):
        t.join(timeout=60)


def await_fast_paths(handle: ModelHandle, method: str) -> None:
    """Before running ``method``: if it uses the model's fast-path copies and they are still being built, wait
    for them with a progress bar (starting the build here if nothing has started it)."""
    if method not in warmup.FAST_PATH_METHODS or warmup.is_ready(handle):
        return
    label = f"Preparing the fast engines for {handle.name} (once per model)…"
    bar = st.progress(0.0, text=label)
    try:
        if not warmup.is_started(handle):
            start_warm_up(handle)
        while not warmup.wait(handle, timeout=0.1):
            frac, step = warmup.progress_of(handle)
            bar.progress(min(max(frac, 0.0), 1.0), text=f"{label} {step}")
    finally:
        bar.empty()
