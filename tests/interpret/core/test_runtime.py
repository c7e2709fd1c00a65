"""The allocator settings the app makes at start-up (interpret/core/runtime.py)."""
from __future__ import annotations

import platform
import threading

import pytest
import torch

from interpret.core import runtime


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_allocator_takes_effect_once_and_tensors_still_work(monkeypatch):
    assert runtime.tune_allocator() is True
    calls = []
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda *a, **k: calls.append(a))
    assert runtime.tune_allocator() is True and calls == []  # idempotent: the C library is not asked again
    out = {}

    def work():  # a fresh thread (as Streamlit's script runs) allocating and freeing large tensors
        a = torch.ones(64, 32, 112, 112)
        out["sum"] = float((a * 2).sum())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["sum"] == 2.0 * 64 * 32 * 112 * 112


def test_tune_allocator_reports_false_without_a_c_library(monkeypatch):
    def no_lib(*a, **k):
        raise OSError("no libc here")

    monkeypatch.setattr(runtime.ctypes, "CDLL", no_lib)
    runtime.tune_allocator.cache_clear()
    try:
        assert runtime.tune_allocator() is False
    finally:
        runtime.tune_allocator.cache_clear()  # the next caller sets the real values again (idempotent)
