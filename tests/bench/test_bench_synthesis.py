"""The measuring parts of bench/bench_synthesis.py, so the benchmark's tables mean what they say: the judge ranks
a real photo's class first, the activation statistics equal a direct computation, Lucent's layer names are the
module paths it hooks. The Lucent side runs only where torch-lucent is installed (requirements-bench.txt)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

import bench.bench_synthesis as B
from interpret.core.hooks import count_hooks
from models.handle import ModelHandle, Preprocess
from models.registry import load_model


def _tiny() -> ModelHandle:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(5, 3)).double().eval()
    return ModelHandle(key="tiny_bench", name="tiny", net=net,
                       preprocess=Preprocess(resize=16, crop=16, mean=(0.5,) * 3, std=(0.25,) * 3),
                       labels=["a", "b", "c"], source="test")


@pytest.mark.slow
@pytest.mark.parametrize("judge", ["efficientnet_lite1", "efficientnet_lite2"])
def test_judge_ranks_a_real_photo(judge):
    """skimage's coffee photo (a cup of espresso, centre-cropped square): espresso first, cup within the top 5."""
    img = (data.coffee()[:, 50:450] / 255.0).astype(np.float32)
    r = B.ranks(np.stack([img, img]), [967, 968], load_model(judge))
    assert r[0] == 0 and r[1] < 5
    assert B.hit_rates(r) == (0.5, 1.0)


def test_channel_stats_equal_a_direct_computation():
    h = _tiny()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    means, peaks = B.channel_stats(h, "1", [4, 1], x)
    with torch.no_grad():
        a = torch.relu(h.net[0](x))
    np.testing.assert_allclose(means, a[:, [4, 1]].mean((2, 3)).numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(peaks, a[:, [4, 1]].amax((2, 3)).numpy(), rtol=1e-12, atol=0)
    assert count_hooks(h.net) == 0


def test_to_input_resizes_and_normalises():
    h = _tiny()
    imgs = np.full((1, 8, 8, 3), 0.75, np.float32)
    x = B.to_input(imgs, h)
    assert x.shape == (1, 3, 16, 16)
    torch.testing.assert_close(x, torch.full_like(x, (0.75 - 0.5) / 0.25))


def test_lucent_names_and_final_linear():
    h = load_model("efficientnet_lite0")
    assert B.final_linear(h.net) == "_fc"
    assert B.lucent_module_name(h.net, "_blocks.6") == "_blocks_6"
    with pytest.raises(KeyError):
        B.lucent_module_name(h.net, "_blocks.99")
    assert len(B.CLASSES) == 20 and len(set(B.CLASSES)) == 20


def test_lucent_side_leaves_the_shared_net_alone():
    pytest.importorskip("lucent")
    h = _tiny()
    h.net.float()
    before = {k: v.clone() for k, v in h.net.state_dict().items()}
    run = B.lucent(h, [("4", 0), ("4", 2)], 3, 0, fixed_size=16)
    assert run.images.shape == (2, 128, 128, 3) and np.isfinite(run.images).all()
    assert count_hooks(h.net) == 0
    assert all(torch.equal(before[k], v) for k, v in h.net.state_dict().items())
