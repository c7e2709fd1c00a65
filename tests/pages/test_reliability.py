"""Reliability under load: one shared model, many threads, long sessions (issue: reliability and security)."""
from __future__ import annotations

import ctypes
import gc
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from interpret.core.hooks import count_hooks
from interpret.attribution.registry import METHODS, explain
from models.images import from_array
from tests.conftest import assert_same_state, model_state

# Every method kind, with light settings: gradients, ReLU-rule backprop, CAM family, path/noise methods, and the
# perturbation methods that batch forward passes.
JOBS = [
    ("saliency", {}), ("grad_x_input", {}), ("guided_backprop", {}), ("deconvnet", {}), ("cam", {}),
    ("gradcam", {}), ("gradcam_pp", {}), ("guided_gradcam", {}),
    ("integrated_gradients", {"steps": 6}), ("smoothgrad", {"samples": 4}),
    ("occlusion", {"window": 56, "stride": 56}), ("lime", {"num_samples": 60, "segmentation": "slic"}),
    ("lime_fast", {"num_samples": 60, "segmentation": "slic"}),  # the frozen TorchScript copy, shared by threads
    ("occlusion_approx", {"window": 32, "stride": 16}),  # bfloat16 changes, BLAS thread limit while interpolating
]


@pytest.fixture(scope="module")
def images(photos):
    from skimage import data
    extra = {"hubble": from_array(data.hubble_deep_field()), "ihc": from_array(data.immunohistochemistry())}
    imgs = list(photos.values()) + list(extra.values())
    return [imgs[i % len(imgs)] for i in range(len(JOBS))]


def _run(handle, img, method, params):
    x = handle.input_tensor(img)
    target = int(np.argmax(handle.predict(x)))
    return explain(handle, x, target, method, **params)


def test_eight_threads_match_solo_runs(default_handle, images):
    """Different methods on different images, all at once on one shared model = each run alone; no hook left."""
    h = default_handle
    assert {m for m, _ in JOBS} <= set(METHODS)
    before = model_state(h.net)
    solo = [_run(h, img, m, p) for img, (m, p) in zip(images, JOBS)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futs = [pool.submit(_run, h, img, m, p) for img, (m, p) in zip(images, JOBS)]
        together = [f.result() for f in futs]
    for (m, _), a, b in zip(JOBS, solo, together):
        assert a.target == b.target
        np.testing.assert_array_equal(a.map, b.map, err_msg=m)
    assert_same_state(before, h.net)


def _rss_mb() -> float:
    """Resident memory of live allocations: freed heap the allocator keeps for reuse (the app's
    ``tune_allocator`` keeps up to 1 GiB, and AppTest runs of app.py earlier in this process set it) is handed
    back first with glibc's ``malloc_trim``, so growth means memory still referenced, not memory held for reuse."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_soak_200_explanations(default_handle, images):
    """200 explanations in one process: resident memory grows < 50 MB after warm-up, no hooks remain."""
    h = default_handle
    cycle = [("saliency", {}), ("gradcam", {}), ("guided_backprop", {}), ("cam", {}), ("grad_x_input", {}),
             ("occlusion", {"window": 112, "stride": 112})]
    hooks0 = count_hooks(h.net)
    for i in range(12):  # warm-up: allocator pools and lazily built state settle
        _run(h, images[i % len(images)], *cycle[i % len(cycle)])
    gc.collect()
    start = _rss_mb()
    for i in range(200):
        _run(h, images[i % len(images)], *cycle[i % len(cycle)])
    gc.collect()
    growth = _rss_mb() - start
    print(f"soak: RSS growth {growth:.1f} MB over 200 explanations")
    assert growth < 50, growth
    assert count_hooks(h.net) == hooks0
    assert torch._C._len_torch_function_stack() == 0


def test_ui_result_cache_is_bounded():
    from pages._ui.compute import LRU

    lru = LRU(5)
    for i in range(100):
        lru.put(i, np.zeros(10))
        lru.get(0)  # a hot key stays
    assert len(lru) == 5 and lru.get(0) is not None and lru.get(98) is not None and lru.get(50) is None
