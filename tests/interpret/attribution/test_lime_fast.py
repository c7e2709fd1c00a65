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

from interpret.attribution.lime_fast import _kernel_weights, _ridge_coef, lime_fast, orthogonal_design  # noqa: E402
from interpret.attribution.lime import lime_explain  # noqa: E402
from tests.conftest import assert_same_state, handle_on, make_handle, model_state  # noqa: E402
from tests.roundoff import U32, U64, gamma, softmax_rounding  # noqa: E402

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


def _exact_fit(h, x, segments: np.ndarray, num_samples: int, seed: int):
    """RedTopLeft's LIME fit done exactly (float64 samples, probabilities and weighted ridge, lime's draw), and
    first-order bounds on how far float32 sampling can move its weights and its score.

    Per pixel of a sample, each path rounds the image to float32 and normalises it with float32 mean and std
    (γ₅ of (|v| + |mean|)/std), and ours adds two roundings building it from the hidden image and the change
    (u·(|x| + |x_hidden|) each); the logit is 8 × a mean of 256 such values (γ₂₅₇ of their mean size); the class
    probability moves by p(1 − p)·|Δz|, plus the float32 softmax's own rounding. The ridge weights and the R² are
    functions of the probabilities: their first-order change is |∂/∂p|·Δp (gradients by autograd in float64),
    plus the two float64 solvers' own error, κ·γ₃ₙ(2⁻⁵³) of the weights."""
    pre = h.preprocess
    image = pre.to_display(x[0]).astype(np.float64)
    n_seg = int(segments.max()) + 1
    data = np.random.RandomState(seed).randint(0, 2, num_samples * n_seg).reshape(num_samples, n_seg)
    data[0, :] = 1
    mean, std = pre.mean[0], pre.std[0]
    on = data[:, segments[:16, :16]].astype(bool)  # (n, 16, 16): the red top-left quadrant of every sample
    shown = np.where(on, image[:16, :16, 0], 0.0)  # hide colour 0
    xq = (shown - mean) / std
    z = 8 * xq.mean((1, 2))
    err_in = gamma(5) * (np.abs(shown) + abs(mean)) / std + 2 * U32 * (np.abs((image[:16, :16, 0] - mean) / std)
                                                                          + abs(mean) / std)
    err_z = 8 * (err_in.mean((1, 2)) + gamma(257) * np.abs(xq).mean((1, 2)))
    logits = np.stack([z, np.zeros_like(z)], 1)
    p = 1 / (1 + np.exp(-z))
    err_p = 2 * p * (1 - p) * err_z + softmax_rounding(logits, 0)  # 2 ×: first-order, as tests/roundoff.py

    w = torch.from_numpy(_kernel_weights(data))
    X = torch.from_numpy(data.astype(np.float64))
    y = torch.from_numpy(p).requires_grad_(True)
    xm, ym = (w[:, None] * X).sum(0) / w.sum(), (w * y).sum() / w.sum()
    Xc, yc = X - xm, y - ym
    A = Xc.T @ (w[:, None] * Xc) + torch.eye(n_seg, dtype=torch.float64)
    coef = torch.linalg.solve(A, Xc.T @ (w * yc))
    pred = Xc @ coef + ym
    r2 = 1 - (w * (y - pred) ** 2).sum() / (w * (y - ym) ** 2).sum()
    e = torch.from_numpy(err_p)
    coef_bound = np.array([float((torch.autograd.grad(coef[j], y, retain_graph=True)[0].abs() * e).sum())
                           for j in range(n_seg)])
    solver = 2 * float(torch.linalg.cond(A)) * gamma(3 * num_samples, U64) * float(coef.detach().abs().max())
    r2_bound = float((torch.autograd.grad(r2, y)[0].abs() * e).sum()) + solver
    return coef.detach().numpy(), coef_bound + solver, float(r2), r2_bound


def test_not_adaptive_equals_lime(setup, device):
    """On each device: both samplings within the float32 bound of the exact (CPU, float64) fit."""
    h, x = setup
    h = handle_on(h, device)
    before = model_state(h.net)
    ours = lime_fast(h, x, 0, num_samples=300, seed=3, adaptive=False, hide_color=0.0, design="lime", **SEG)
    ref = lime_explain(h, x, 0, num_samples=300, seed=3, hide_color=0.0, **SEG)
    assert np.array_equal(ours.extra["segments"], ref.extra["segments"])
    coef, coef_bound, r2, r2_bound = _exact_fit(h, x, ours.extra["segments"], 300, 3)
    assert coef_bound.max() < 0.01 * np.abs(coef).max()  # small enough for a wrong weight to fail
    for res in (ours, ref):  # both float32 samplings of the same exact fit
        assert (np.abs(_w(res) - coef) <= coef_bound).all(), np.abs(_w(res) - coef).max()
        assert abs(res.extra["score"] - r2) <= r2_bound
    assert ours.extra["top_positive"] == ref.extra["top_positive"]
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
