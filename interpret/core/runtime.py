"""Process settings for serving explanations from many short-lived threads (Streamlit runs every script run, i.e.
every click, in a new thread).

glibc gives each new thread its own malloc arena (up to 8 per core), and a thread arena's heaps are at most 64 MB:
the activations of a batch of windows or LIME samples (tens of MB each) are then ``mmap``-ed and returned to the
system on every free, so a fresh thread faults in and zeroes every page again, on every call. Measured on the default model (2-core CPU, Compare's quick settings, each run in a new thread as Streamlit does):
approximate occlusion 0.79–2.13 s per run (0.5 s in the main thread), exact 0.96–1.63 s; with one arena and a
fixed 32 MB mmap threshold, 0.69–0.76 s and 0.88–0.98 s. ``tune_allocator()`` sets exactly that, once, at start-up.

Written by hand: torch has no caching allocator for CPU tensors (its ``CPUCachingAllocator`` is mobile-only), and
the ``MALLOC_*`` environment variables act only when set before the process starts, which ``streamlit run`` does
not let the app do.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

__all__ = ["tune_allocator"]

log = logging.getLogger("cnn_lens")

# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (HEAP_MAX_SIZE / 2 on 64-bit); fixing it stops the
#                             dynamic adjustment
_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap for the next call instead of returning it


@functools.cache
def tune_allocator() -> bool:
    """One malloc arena for all threads, a fixed mmap threshold and a high trim threshold (module docstring).
    Done once per process (later calls return the first result); returns whether the settings are in force (False
    where the C library is not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError as err:  # no C library to load (not Linux/glibc): the defaults stay
        log.info("allocator settings left at their defaults: %s", err)
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(p, v) == 1 for p, v in ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
                                               (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))


def cancelled(cancel) -> bool:
    """Whether a long scan should stop: ``cancel`` is None (never), a ``threading.Event`` or a callable."""
    if cancel is None:
        return False
    return bool(cancel.is_set()) if hasattr(cancel, "is_set") else bool(cancel())
