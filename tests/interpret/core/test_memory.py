"""Out of device memory: every batched loop retries the failed chunk with half the batch (down to one) and gives
the same result as a run that never batched; one item that does not fit gives ``DeviceOutOfMemory`` naming the
device, the computation and what to try. OOM is injected on the CPU by a network that raises torch's
``OutOfMemoryError`` for batches above a size, as CUDA does."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import make_handle
from occlusion_oracle import assert_within, exact_occlusion
from interpret.attribution.integrated_gradients import integrated_gradients
from interpret.attribution.lime_fast import lime_fast
from interpret.attribution.occlusion import occlusion
from interpret.attribution.smoothgrad import smoothgrad
from interpret.core.errors import CnnLensError, DeviceOutOfMemory
from interpret.core.memory import is_out_of_memory, run_chunks, with_batch_retry
from interpret.engines import incremental
from interpret.evaluation.metrics import deletion_insertion
from interpret.units import top_patches as tp


class OomNet(nn.Module):
    """A small CNN that runs out of "memory" on batches of more than ``limit`` images (None: never)."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)
        self.limit = limit
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(int(x.shape[0]))
        if self.limit is not None and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} images")
        return self.fc(self.pool(self.relu(self.conv2(self.relu(self.conv1(x))))).flatten(1))


def _pair(limit: int):
    """(handle that runs out above ``limit``, handle with the same weights that never does)."""
    small, free = OomNet(limit), OomNet(None)
    free.load_state_dict(small.state_dict())
    return make_handle(small, 16, 5), make_handle(free, 16, 5)


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_run_chunks_halves_and_covers_every_item_once():
    seen: list[int] = []
    attempts: list[tuple[int, int]] = []

    def step(s, e):
        attempts.append((s, e))
        if e - s > 3:
            raise torch.OutOfMemoryError("out of memory")
        seen.extend(range(s, e))

    used = run_chunks(10, 8, step, device="cpu", what="a test")
    assert sorted(seen) == list(range(10)) and len(seen) == 10
    assert used == 2  # 8 → 4 → 2, kept for the rest
    assert attempts[:3] == [(0, 8), (0, 4), (0, 2)]
    assert all(e - s <= 2 for s, e in attempts[3:])


def test_run_chunks_custom_plan_is_replanned_from_the_failed_chunk():
    plans = []

    def plan(m, b):
        plans.append((m, b))
        return [(s, min(m, s + b)) for s in range(0, m, b)]

    done = []

    def step(s, e):
        if e - s > 2:
            raise torch.OutOfMemoryError("out of memory")
        done.append((s, e))

    run_chunks(7, 4, step, device="cpu", what="a test", plan=plan)
    assert plans == [(7, 4), (7, 2)]
    assert done == [(0, 2), (2, 4), (4, 6), (6, 7)]


def test_one_item_too_big_names_device_computation_and_advice():
    def step(s, e):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(DeviceOutOfMemory) as err:
        run_chunks(5, 4, step, device="cpu", what="the frobnication", hint="a smaller frob")
    msg = str(err.value)
    assert "device cpu" in msg and "the frobnication" in msg and "batch size 1" in msg and "a smaller frob" in msg
    assert isinstance(err.value, CnnLensError)


def test_other_errors_are_not_retried():
    calls = []

    def step(s, e):
        calls.append((s, e))
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_chunks(5, 4, step, device="cpu", what="x")
    assert calls == [(0, 4)]
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_with_batch_retry():
    sizes = []

    def fn(b):
        sizes.append(b)
        if b > 3:
            raise torch.OutOfMemoryError("out of memory")
        return b * 10

    assert with_batch_retry(fn, 16, device="cpu", what="x") == 20
    assert sizes == [16, 8, 4, 2]
    with pytest.raises(DeviceOutOfMemory, match="integrated"):
        with_batch_retry(lambda b: fn(99), 4, device="cpu", what="integrated gradients")


@pytest.mark.parametrize("engine", ["batched", "incremental"])
def test_occlusion_after_oom_equals_the_unbatched_map(engine, monkeypatch):
    if engine == "batched":
        h_small, h_free = _pair(1)
    else:  # OomNet is not traced by the incremental engine (it falls back to batched): a plain CNN, and the
        # out-of-memory error is injected into the engine's batched step instead
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
        h_small, h_free = make_handle(net, 16, 5), make_handle(copy.deepcopy(net), 16, 5)
    x = _x()
    if engine == "incremental":  # the traced copy drops the forward's check: inject into the batched step
        patched = incremental.IncrementalOcclusion._patched
        raised = []

        def limited(self, env, padded, x, base, cs, wh, ww):
            if len(cs) > 1 and self.gm is incremental.traced_copy(h_small):
                raised.append(len(cs))
                raise torch.OutOfMemoryError("out of memory")
            return patched(self, env, padded, x, base, cs, wh, ww)

        monkeypatch.setattr(incremental.IncrementalOcclusion, "_patched", limited)
    got = occlusion(h_small, x, 2, window=5, stride=3, batch_size=8, engine=engine)
    want = occlusion(h_free, x, 2, window=5, stride=3, batch_size=1, engine=engine)
    assert got.extra["engine"] == want.extra["engine"]
    if engine == "batched":  # the same one-window passes, so the same rounding
        np.testing.assert_array_equal(got.map, want.map)
        np.testing.assert_array_equal(got.extra["prob_drop"], want.extra["prob_drop"])
    else:  # the incremental engine pads and splits passes its own way: both within the float32 bound of the exact map
        ex = exact_occlusion(h_free.net, x, (2,), 5, 3, dtype=torch.float64, probs=False)
        assert_within(got.map, ex["map"][0], ex["map_bound"][0])
        assert_within(want.map, ex["map"][0], ex["map_bound"][0])
    if engine == "batched":
        assert 8 in h_small.net.calls and max(h_small.net.calls[1:]) == 8  # it did try the big batch
    else:
        assert raised  # a multi-window pass was tried and refused, so the retry path really ran
        assert got.extra["engine"] == "incremental"


def test_occlusion_that_never_fits_says_so():
    h, _ = _pair(0)
    with pytest.raises(DeviceOutOfMemory, match=r"device cpu while computing occlusion.*; try "):
        occlusion(h, _x(), 1, window=5, stride=4, engine="batched")


def test_smoothgrad_and_ig_after_oom_equal_the_unbatched_ones():
    h_small, h_free = _pair(1)
    x = _x(1)
    a = smoothgrad(h_small, x, 3, samples=6, batch_size=4, seed=3)
    b = smoothgrad(h_free, x, 3, samples=6, batch_size=1, seed=3)
    np.testing.assert_array_equal(a.extra["rgb"], b.extra["rgb"])
    a = integrated_gradients(h_small, x, 3, steps=6, batch_size=4)
    b = integrated_gradients(h_free, x, 3, steps=6, batch_size=1)
    np.testing.assert_array_equal(a.extra["rgb"], b.extra["rgb"])


def test_metrics_and_fast_lime_after_oom_equal_the_unbatched_ones():
    h_small, h_free = _pair(1)
    x = _x(2)
    m = np.random.default_rng(0).random((16, 16))
    a = deletion_insertion(h_small, x, 1, m, steps=6, batch_size=5)
    b = deletion_insertion(h_free, x, 1, m, steps=6, batch_size=1)
    np.testing.assert_array_equal(a.deletion, b.deletion)
    np.testing.assert_array_equal(a.insertion, b.insertion)
    seg = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 4, 0), 4, 1)
    a = lime_fast(h_small, x, 1, segments=seg, num_samples=40, batch_size=5, adaptive=False)
    b = lime_fast(h_free, x, 1, segments=seg, num_samples=40, batch_size=1, adaptive=False)
    np.testing.assert_array_equal(a.map, b.map)


def test_top_patch_scan_after_oom_equals_the_unbatched_one():
    h_small, h_free = _pair(1)
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(7)]
    a = tp.scan(h_small, imgs, "conv2", channels=[0, 3], k=3, batch_size=4)
    b = tp.scan(h_free, imgs, "conv2", channels=[0, 3], k=3, batch_size=1)
    assert a.records() == b.records()
