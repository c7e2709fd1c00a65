"""Fast LIME: equals lime (the package) sample for sample with lime's design when not adaptive, finds the known
answer of a tiny model as lime does, is deterministic per seed, stops early with a stability figure when adaptive,
and its orthogonal design has the stated structure and estimates lime's weights with less noise."""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402
from torch import nn  # noqa: E402

from interpret.lime_fast import _kernel_weights, _ridge_coef, lime_fast, orthogonal_design  # noqa: E402
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
    ours = lime_fast(h, x, 0, num_samples=300, seed=3, adaptive=False, hide_color=0.0, design="lime", **SEG)
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


@pytest.mark.parametrize("n_seg", [5, 30, 63, 64, 200])
def test_orthogonal_design_structure(n_seg):
    m = 1 << max(6, n_seg.bit_length())
    d = orthogonal_design(4 * m + 7, n_seg, np.random.RandomState(n_seg))
    assert d.shape == (4 * m + 7, n_seg) and set(np.unique(d)) <= {0, 1}
    assert (d[0] == 1).all()  # the image itself, as lime's first sample
    v0 = 2.0 * d[:2 * m] - 1
    assert np.array_equal(v0[m + 1:], -v0[1:m])  # block 1: foldover apart from the overwritten first row
    v = 2.0 * d[2 * m:4 * m] - 1  # block 2, untouched
    assert np.array_equal(v[m:], -v[:m])  # foldover: every row's complement
    assert (v.sum(0) == 0).all()  # each superpixel on in exactly half the rows
    assert np.array_equal(v[:m].T @ v[:m], m * np.eye(n_seg))  # columns mutually orthogonal
    # each row is uniform over on/off patterns: per-superpixel frequency ½ and pairwise independence, over many blocks
    big = orthogonal_design(20000, 6, np.random.RandomState(1))[1:]
    assert np.abs(big.mean(0) - 0.5).max() < 0.02
    pair = (big[:, :, None] & big[:, None, :]).mean(0)[~np.eye(6, dtype=bool)]
    assert np.abs(pair - 0.25).max() < 0.02


class Interacting(nn.Module):
    """Class 0's logit: a weighted sum of the mean red of 16 blocks plus products of neighbouring blocks, so LIME's
    linear fit has interactions to average out, as with a real network."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(16, generator=g), requires_grad=False)
        self.v = nn.Parameter(2 * torch.randn(15, generator=g), requires_grad=False)

    def forward(self, x):
        r = x[:, 0].reshape(-1, 4, 8, 4, 8).mean((2, 4)).reshape(-1, 16)
        z = r @ self.w + (r[:, :-1] * r[:, 1:]) @ self.v
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_orthogonal_design_is_less_noisy_than_lime_draws():
    """Against the weights from 40 000 of lime's draws (the quantity both designs estimate), 256 orthogonal samples
    (two blocks) err clearly less than 256 of lime's draws: mean squared error over 24 seeds (measured ratio
    about 0.6)."""
    h = make_handle(Interacting(), 32, 2)
    x = h.input_tensor(Image.fromarray(data.astronaut()))
    grid = (np.arange(32)[:, None] // 8) * 4 + np.arange(32)[None, :] // 8  # the 16 blocks as superpixels
    kw = dict(segments=grid, hide_color=0.0, adaptive=False)
    truth = _w(lime_fast(h, x, 0, num_samples=40000, seed=99, design="lime", batch_size=2000, **kw))
    err = {design: np.mean([np.sum((_w(lime_fast(h, x, 0, num_samples=256, seed=s, design=design, **kw)) - truth)
                                   ** 2) for s in range(24)]) for design in ("orthogonal", "lime")}
    assert err["orthogonal"] < 0.8 * err["lime"], err
