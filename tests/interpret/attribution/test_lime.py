"""LIME through the lime package: seeding, segment relabelling, and a model whose answer lives in one region."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_same_state, handle_on, make_handle, model_state
from interpret.attribution.lime import lime_explain, make_segmenter
from interpret.attribution.registry import explain


class RegionNet(nn.Module):
    """Class 0's logit is 20 × (mean red intensity of rows 8–15, columns 16–23 in display space − 0.5);
    class 1's is 0. Nothing outside that block can matter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0] * 0.25 + 0.5  # undo the handle's normalization (mean 0.5, std 0.25)
        z = 20 * (red[:, 8:16, 16:24].mean(dim=(1, 2)) - 0.5)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def block_image(seed: int = 0) -> torch.Tensor:
    """A 32² image of 4×4 flat blocks of random colours (each block one superpixel for felzenszwalb/slic)."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(3, 4, 4, generator=g) * 0.6 + 0.3
    img = colours.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    img[0, 8:16, 16:24] = 0.95  # a bright red block: class 0 is confident
    return ((img - 0.5) / 0.25).unsqueeze(0)


@pytest.fixture(scope="module")
def region():
    return make_handle(RegionNet(), size=32, n_classes=2)


def textured(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, 32, 32, generator=g) * 0.8


def test_top_superpixel_is_the_region(region, device):
    region = handle_on(region, device)
    x = block_image()
    before = model_state(region.net)
    a = lime_explain(region, x, 0, segmentation="felzenszwalb", seg_params={"scale": 1.0, "sigma": 0.0, "min_size": 4},
                     num_samples=200, hide_color=0.0, seed=1)
    segs = a.extra["segments"]
    assert segs.max() + 1 == 16  # the 16 flat blocks
    top = a.extra["top_positive"][0]
    assert set(np.unique(np.argwhere(segs == top)[:, 0] // 8)) == {1}
    assert set(np.unique(np.argwhere(segs == top)[:, 1] // 8)) == {2}
    weights = a.extra["weights"]
    others = [abs(w) for s, w in weights.items() if s != top]
    assert weights[top] > 0.1 and max(others) < 0.05 * weights[top]
    np.testing.assert_allclose(a.map[8:16, 16:24], weights[top])
    assert a.signed and a.method == "lime" and a.map.shape == (32, 32)
    assert_same_state(before, region.net)


@pytest.mark.parametrize("segmentation", ["quickshift", "slic", "felzenszwalb"])
def test_same_seed_same_result(region, segmentation):
    x = textured()
    runs = [lime_explain(region, x, 0, segmentation=segmentation, num_samples=60, seed=s) for s in (3, 3, 4)]
    a, b, c = runs
    assert np.array_equal(a.map, b.map) and np.array_equal(a.extra["segments"], b.extra["segments"])
    assert a.extra["weights"] == b.extra["weights"]
    assert not np.array_equal(a.map, c.map)  # another seed samples other on/off patterns


def test_segments_are_relabelled_from_zero():
    img = np.random.default_rng(0).random((32, 32, 3))
    seg = make_segmenter("slic", {"start_label": 1, "n_segments": 10})(img)  # slic itself would start at 1
    assert seg.min() == 0 and np.array_equal(np.unique(seg), np.arange(seg.max() + 1))


def test_quickshift_seed_reaches_skimage():
    """lime passes ``random_seed`` that scikit-image renamed to ``rng``; ours must pass the seed on."""
    from skimage.segmentation import quickshift

    img = np.random.default_rng(1).random((24, 24, 3))
    ours = make_segmenter("quickshift", {"kernel_size": 2, "max_dist": 6}, seed=7)(img)
    ref = quickshift(img, kernel_size=2, max_dist=6, ratio=0.2, rng=7)
    assert np.array_equal(ours, np.unique(ref, return_inverse=True)[1].reshape(ref.shape))
    with pytest.raises(ValueError, match="random_seed"):
        make_segmenter("quickshift", {"random_seed": 1})
    with pytest.raises(ValueError):
        make_segmenter("watershed")


def test_extras_progress_and_registry(region):
    x = block_image(1)
    seen: list[float] = []
    a = lime_explain(region, x, 0, segmentation="slic", num_samples=40, batch_size=16, seed=0,
                     progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 3
    w = a.extra["weights"]
    assert set(w) == set(np.unique(a.extra["segments"]).tolist())
    assert all(w[s] > 0 for s in a.extra["top_positive"]) and all(w[s] < 0 for s in a.extra["top_negative"])
    for s, v in w.items():
        assert np.all(a.map[a.extra["segments"] == s] == np.float32(v))
    assert {"score", "intercept", "local_pred"} <= set(a.extra)
    r = explain(region, x, 0, "lime", segmentation="slic", num_samples=40, seed=0)
    assert np.array_equal(r.map, a.map) and r.params["seed"] == 0


def test_threads_share_one_model(region):
    from concurrent.futures import ThreadPoolExecutor

    xs = [block_image(i) for i in range(4)]
    run = lambda x: lime_explain(region, x, 0, segmentation="slic", num_samples=40, seed=2).map  # noqa: E731
    alone = [run(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, xs))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
