"""Fast LIME: equals lime (the package) sample for sample when not adaptive, finds the known answer of a tiny
model as lime does, is deterministic per seed, and stops early with a stability figure when adaptive."""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402
from torch import nn  # noqa: E402

from interpret.lime_fast import _kernel_weights, _ridge_coef, lime_fast  # noqa: E402
from interpret.lime_method import lime_explain  # noqa: E402
from tests.conftest import assert_same_state, make_handle, model_state  # noqa: E402

SEG = {"segmentation": "slic", "seg_params": {"n_segments": 16, "compactness": 10.0}}


class RedTopLeft(nn.Module):
    """Class 0's logit is 8 × the mean red (normalized) of the top-left quadrant; class 1's is 0: the superpixels
    of that quadrant are the answer."""

    def forward(self, x):
        z = 8 * x[:, 0, :16, :16].mean((1, 2))
        return torch.stack([z, torch.zeros_like(z)], 1)


@pytest.fixture(scope="module")
def setup():
    h = make_handle(RedTopLeft(), 32, 2)
    x = h.input_tensor(Image.fromarray(data.astronaut()))
    return h, x


def _w(res) -> np.ndarray:
    return np.array([res.extra["weights"][k] for k in sorted(res.extra["weights"])])


def test_not_adaptive_equals_lime(setup):
    h, x = setup
    before = model_state(h.net)
    ours = lime_fast(h, x, 0, num_samples=300, seed=3, adaptive=False, hide_color=0.0, **SEG)
    ref = lime_explain(h, x, 0, num_samples=300, seed=3, hide_color=0.0, **SEG)
    assert np.array_equal(ours.extra["segments"], ref.extra["segments"])
    assert np.abs(_w(ours) - _w(ref)).max() <= 1e-4 * np.abs(_w(ref)).max()
    assert ours.extra["top_positive"] == ref.extra["top_positive"]
    assert ours.extra["score"] == pytest.approx(ref.extra["score"], rel=1e-4)
    assert ours.extra["samples_used"] == 300
    assert_same_state(before, h.net)


def test_known_answer_agrees_with_lime(setup):
    h, x = setup
    ours = lime_fast(h, x, 0, num_samples=1000, seed=1, hide_color=0.0, **SEG)
    ref = lime_explain(h, x, 0, num_samples=1000, seed=2, hide_color=0.0, **SEG)
    seg = ours.extra["segments"]
    inside = {s for s in np.unique(seg) if (seg[:16, :16] == s).mean() > 0 and (seg[:16, :16] == s).sum()
              >= 0.5 * (seg == s).sum()}
    assert ours.extra["top_positive"][0] in inside
    assert ref.extra["top_positive"][0] in inside
    assert set(ours.extra["top_positive"][:3]) == set(ref.extra["top_positive"][:3])
    assert ours.extra["samples_used"] <= 1000 and 0.0 <= ours.extra["stability"] <= 1.0
    early = lime_fast(h, x, 0, num_samples=1000, seed=1, hide_color=0.0, num_top=1, **SEG)
    assert early.extra["samples_used"] < 1000 and early.extra["stability"] == 1.0  # top-1 settles early


def test_deterministic_per_seed(setup):
    h, x = setup
    a = lime_fast(h, x, 0, num_samples=200, seed=5, **SEG)
    b = lime_fast(h, x, 0, num_samples=200, seed=5, **SEG)
    c = lime_fast(h, x, 0, num_samples=200, seed=6, **SEG)
    assert np.array_equal(a.map, b.map) and a.extra["weights"] == b.extra["weights"]
    assert not np.array_equal(_w(a), _w(c))


def test_kernel_and_ridge_match_lime_and_sklearn():
    from lime.lime_image import LimeImageExplainer
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    rng = np.random.RandomState(0)
    z = rng.randint(0, 2, (200, 12))
    z[0] = 1
    d = pairwise_distances(z, z[:1], metric="cosine").ravel()
    kernel = LimeImageExplainer().base.kernel_fn
    assert np.allclose(_kernel_weights(z), kernel(d))
    y = rng.rand(200)
    w = _kernel_weights(z)
    assert np.allclose(_ridge_coef(z.astype(float), y, w), Ridge(alpha=1.0).fit(z, y, sample_weight=w).coef_)
