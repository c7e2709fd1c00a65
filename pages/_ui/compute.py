"""Process-wide, bounded result caches with progress bars (results keyed by model + image + target + params).

``st.cache_data`` would replay the progress bar drawn inside a cached function; this LRU keeps the bar
outside and bounds memory by entry count.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Callable

import streamlit as st


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
def _cache(name: str, size: int) -> LRU:
    return LRU(size)


def cache_key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def cached(name: str, key: str, compute: Callable[[Callable[[float], None] | None], Any], *,
           label: str = "Computing…", progress: bool = True, size: int = 64) -> Any:
    """The cached value for ``key``, or ``compute(progress_callback)`` shown with a progress bar."""
    lru = _cache(name, size)
    hit = lru.get(key)
    if hit is not None:
        return hit
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
