"""Linear CKA: the reference properties (CKA(X, X) = 1, invariance to orthogonal maps and isotropic scaling), the
direct formula as oracle, streaming/merging equal to one-shot, features with a large offset, and the layer scan
over a collection (its features, the diagonal of a model with itself, two models of different input sizes,
no hook left, threads)."""
from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from interpret.core.errors import InputError
from interpret.core.hooks import count_hooks
from interpret.core.layers import capture
from interpret.evaluation.cka import (CKAState, cka_scan, default_layers, linear_cka, pooled_features)
from models.collections import ImageCollection, classroom_shapes
from tests.conftest import assert_same_state, make_handle, model_state

U = np.finfo(np.float64).eps / 2


def gamma(k: int) -> float:
    return k * U / (1 - k * U)


def direct_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The formula as written, with an explicit centring matrix H = I − 11ᵀ/n."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    xc, yc = h @ x, h @ y
    return float(np.linalg.norm(yc.T @ xc, "fro") ** 2
                 / (np.linalg.norm(xc.T @ xc, "fro") * np.linalg.norm(yc.T @ yc, "fro")))


def exact_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA of integer matrices in exact rational arithmetic (only the final square root is rounded)."""
    n = x.shape[0]
    X = [[Fraction(int(v)) for v in row] for row in x]
    Y = [[Fraction(int(v)) for v in row] for row in y]

    def centred(M):
        means = [sum(M[k][j] for k in range(n)) / n for j in range(len(M[0]))]
        return [[M[k][j] - means[j] for j in range(len(M[0]))] for k in range(n)]

    def gram_norm2(A, B):  # ||Aᵀ B||²_F
        return sum(sum(A[k][i] * B[k][j] for k in range(n)) ** 2 for i in range(len(A[0])) for j in range(len(B[0])))

    xc, yc = centred(X), centred(Y)
    num, dx, dy = gram_norm2(yc, xc), gram_norm2(xc, xc), gram_norm2(yc, yc)
    return float(np.sqrt(float(num * num / (dx * dy))))  # CKA² exact; two roundings (quotient, root)


def cka_bound(x: np.ndarray, y: np.ndarray, merges: int = 1) -> float:
    """First-order bound on the relative rounding error of a float64 linear CKA (centring, co-moments, Frobenius
    norms, and ``merges`` pairwise merges), from Higham's dot-product bound: every co-moment entry is a sum of n
    products of centred values, each |x − x̄| ≤ 2 max|x| of its column, so its error is at most
    γ(k) · n · mx_i · my_j, k = 4n + 8·merges; ||M||_F then errs by at most that matrix's norm, a product
    norm squared doubles the relative error, and the final norms, product and quotient add γ of their lengths."""
    n = x.shape[0]
    xc, yc = x - x.mean(0), y - y.mean(0)
    mx, my = 2 * np.abs(x).max(0), 2 * np.abs(y).max(0)
    g = gamma(4 * n + 8 * merges)

    def rel(ma, mb, m):
        return g * n * np.linalg.norm(ma) * np.linalg.norm(mb) / np.linalg.norm(m)

    p, q = x.shape[1], y.shape[1]
    r = 2 * rel(my, mx, yc.T @ xc) + rel(mx, mx, xc.T @ xc) + rel(my, my, yc.T @ yc)
    r += gamma(p * q) * 2 + gamma(p * p) + gamma(q * q) + 8 * U
    return 2 * r  # SAFETY 2 for second-order terms


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_integer_matrices_equal_exact_arithmetic(rng):
    x = rng.integers(-5, 6, size=(9, 3))
    y = rng.integers(-5, 6, size=(9, 4))
    want = exact_cka(x, y)
    assert 0.0 < want < 1.0
    for got in (linear_cka(x, y), direct_cka(x.astype(float), y.astype(float))):
        assert abs(got - want) <= cka_bound(x.astype(float), y.astype(float)) + 2 * U


@pytest.mark.parametrize("n,p,q", [(7, 3, 5), (40, 10, 6), (25, 30, 2)])
def test_equals_direct_formula(rng, n, p, q):
    x, y = rng.normal(size=(n, p)), rng.normal(size=(n, q)) + 0.3 * rng.normal(size=(n, 1))
    got, want = linear_cka(x, y), direct_cka(x, y)
    assert abs(got - want) <= 2 * cka_bound(x, y)


def test_self_similarity_is_one(rng):
    x = rng.normal(size=(30, 8))
    assert abs(linear_cka(x, x) - 1.0) <= cka_bound(x, x)


def test_invariant_to_orthogonal_maps_and_isotropic_scaling(rng):
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 4))
    y[:, 0] += x[:, 0]  # a shared direction, so CKA is well away from 0
    base = linear_cka(x, y)
    q6 = ortho_group.rvs(6, random_state=1)
    q4 = ortho_group.rvs(4, random_state=2)
    for xx, yy in ((x @ q6, y), (x, y @ q4), (3.7 * x, y), (x, 0.01 * y), (2.0 * x @ q6, 5.0 * y @ q4)):
        # the transformed inputs are rounded too: XQ errs by γ(p)·|X||Q| per entry, which the bound of the
        # transformed pair covers with its factor 2 max|x| (|X||Q| entries ≤ √p max|x| ≤ 3 max|x| here)
        tol = cka_bound(x, y) + 3 * cka_bound(xx, yy)
        assert abs(linear_cka(xx, yy) - base) <= tol
    # not invariant to a non-isotropic scaling: the tests above can fail
    assert abs(linear_cka(x * np.array([10, 1, 1, 1, 1, 1]), y) - base) > 1e-3


def test_constant_features_have_no_cka(rng):
    x = rng.normal(size=(10, 3))
    assert np.isnan(linear_cka(np.ones((10, 2)), x))


def test_streaming_and_merging_equal_one_shot(rng):
    sizes_a, sizes_b = (3, 5), (4, 1, 2)
    fa = rng.normal(size=(37, 8)) + rng.normal(size=8) * 3
    fb = rng.normal(size=(37, 7)) + fa[:, :1]
    want = np.array([[direct_cka(fa[:, sa], fb[:, sb]) for sb in (slice(0, 4), slice(4, 5), slice(5, 7))]
                     for sa in (slice(0, 3), slice(3, 8))])
    one = CKAState.of_batch(sizes_a, sizes_b, fa, fb).matrix()
    streamed = CKAState(sizes_a, sizes_b)
    cuts = [0, 1, 5, 16, 16, 30, 37]  # uneven batches, one empty, one of a single row
    for a, b in zip(cuts[:-1], cuts[1:]):
        streamed.update(fa[a:b], fb[a:b])
    parts = [CKAState.of_batch(sizes_a, sizes_b, fa[a:b], fb[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    merged = CKAState.merge(parts[::-1])  # shards in any order
    nested = CKAState.merge([CKAState.merge(parts[:3]), CKAState.merge(parts[3:])])
    for i, sa in enumerate((slice(0, 3), slice(3, 8))):
        for j, sb in enumerate((slice(0, 4), slice(4, 5), slice(5, 7))):
            tol = 2 * cka_bound(fa[:, sa], fb[:, sb], merges=len(cuts))
            for m in (one, streamed.matrix(), merged.matrix(), nested.matrix()):
                assert abs(m[i, j] - want[i, j]) <= tol
    assert streamed.n == merged.n == 37
    np.testing.assert_allclose(merged.mean_a, fa.mean(0), rtol=0, atol=gamma(40) * 2 * np.abs(fa).max())


def test_large_common_offset_loses_no_precision(rng):
    """Averaged ReLU outputs share a large positive offset; summing raw products and subtracting n·mean² at the
    end would lose ~(offset/σ)²·n·u ≈ 1e-2 here. Centring each batch first bounds the error by the batch mean's
    rounding, γ(m)·max|x| per centred value, relative to σ."""
    x = 1e6 + rng.normal(size=(64, 3))
    y = 1e6 + x[:, :2] + rng.normal(size=(64, 2))
    want = direct_cka(x - 1e6, y - 1e6)  # offsets removed exactly (|x − 1e6| < 8: exact in float64)
    st = CKAState((3,), (2,))
    for k in range(0, 64, 16):
        st.update(x[k:k + 16], y[k:k + 16])
    sigma = min(x.std(0).min(), y.std(0).min())
    tol = 8 * gamma(2 * 16 + 2) * 1e6 / sigma + 2 * cka_bound(x - 1e6, y - 1e6, merges=4)
    assert abs(st.matrix()[0, 0] - want) <= tol


def test_state_refuses_mismatched_input_and_too_many_pairs():
    st = CKAState((2,), (3,))
    with pytest.raises(InputError):
        st.update(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(InputError):
        CKAState.merge([st, CKAState((2,), (2,))])
    with pytest.raises(InputError, match="fewer"):
        CKAState((5000,), (5000,))


# ---- the scan over a collection ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clean():
    from models import load_model

    return load_model("classroom_clean", "cpu")


@pytest.fixture(scope="module")
def spurious():
    from models import load_model

    return load_model("classroom_spurious", "cpu")


@pytest.fixture(scope="module")
def shapes():
    bc = classroom_shapes(n=10)
    return ImageCollection([(k, n) for k, n in enumerate(bc.names)], bc.load, bc.title)


def tiny32():
    """A small CNN at 32×32 input (a different input size from the 64² classroom models)."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(6, 3))
    return make_handle(net, 32, key="tiny32")


def test_pooled_features_are_spatial_means_of_the_layer_outputs(clean, shapes):
    layers = ["features.2", "features.13", "features.23"]
    x = torch.stack([clean.preprocess(img) for _, _, img in shapes])
    got = pooled_features(clean, x, layers)
    for layer, g in zip(layers, got):
        with capture(clean, layer) as cap:
            cap.run(x)
        out = cap.output.detach().double()  # N×C×h×w float32 values, averaged here in float64
        want = out.mean(dim=(2, 3)).numpy()
        hw = out.shape[2] * out.shape[3]
        # torch's float32 mean of hw values: γ32(hw) relative to the mean of |values|
        tol = 2 * hw * np.finfo(np.float32).eps / 2 * out.abs().mean(dim=(2, 3)).numpy()
        assert g.shape == want.shape and np.all(np.abs(g - want) <= tol + 1e-30), layer


def _features(handle, images, layers, batch_size):
    """The oracle's features: the same batches, concatenated over the whole collection."""
    out = []
    items = [img for _, _, img in images]
    for k in range(0, len(items), batch_size):
        x = torch.stack([handle.preprocess(im) for im in items[k:k + batch_size]])
        out.append(pooled_features(handle, x, layers))
    return [np.concatenate([o[i] for o in out]) for i in range(len(layers))]


def test_model_with_itself_has_a_diagonal_of_one(clean, shapes):
    before = model_state(clean.net)
    res = cka_scan(clean, clean, shapes, batch_size=4)
    assert_same_state(before, clean.net)
    assert res.layers_a == res.layers_b == default_layers(clean)
    assert res.n_images == len(shapes) and res.matrix.shape == (7, 7)
    feats = _features(clean, shapes, res.layers_a, 4)
    for i, f in enumerate(feats):
        assert abs(res.matrix[i, i] - 1.0) <= cka_bound(f, f, merges=3), res.layers_a[i]
    np.testing.assert_allclose(res.matrix, res.matrix.T, rtol=0, atol=2 * max(cka_bound(f, f, 3) for f in feats))
    for i in range(7):  # off-diagonal: the direct formula, and really below 1 (different layers differ)
        for j in range(7):
            if i != j:
                b = 2 * cka_bound(feats[i], feats[j], merges=3)
                assert abs(res.matrix[i, j] - direct_cka(feats[i], feats[j])) <= b
                assert res.matrix[i, j] < 1 - b


def test_two_models_of_different_input_sizes_equal_the_oracle(clean, shapes):
    tiny = tiny32()
    layers_b = ["1", "4"]
    res = cka_scan(clean, tiny, shapes, ["features.2", "features.23"], layers_b, batch_size=3)
    fa = _features(clean, shapes, res.layers_a, 3)
    fb = _features(tiny, shapes, layers_b, 3)
    for i in range(2):
        for j in range(2):
            assert abs(res.matrix[i, j] - direct_cka(fa[i], fb[j])) <= 2 * cka_bound(fa[i], fb[j], merges=4)
    assert res.channels_a == [16, 96] and res.channels_b == [4, 6]


def test_clean_and_spurious_scan_with_progress_and_no_hooks(clean, spurious, shapes):
    seen = []
    res = cka_scan(clean, spurious, shapes, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 10), (8, 10), (10, 10)]
    assert count_hooks(clean.net) == 0 and count_hooks(spurious.net) == 0
    fa, fb = _features(clean, shapes, res.layers_a, 4), _features(spurious, shapes, res.layers_b, 4)
    bound = np.array([[cka_bound(f, g, merges=3) for g in fb] for f in fa])
    assert np.all((res.matrix >= 0) & (res.matrix <= 1 + bound))
    assert len(res.best_match()) == 7


def test_cancel_and_too_few_images(clean, shapes):
    calls = iter([False, True])
    res = cka_scan(clean, clean, shapes, batch_size=4, cancel=lambda: next(calls))
    assert res.cancelled and res.n_images == 4
    one = ImageCollection(shapes.items[:1], shapes.loader)
    with pytest.raises(InputError, match="at least 2"):
        cka_scan(clean, clean, one)
    with pytest.raises(InputError, match="no layer named"):
        cka_scan(clean, clean, shapes, ["nope"], None)


def test_threads_see_their_own_results(clean, spurious, shapes):
    """Two scans of the same shared model at once (and a prediction meanwhile) give the serial results."""
    serial = {k: cka_scan(clean, other, shapes, batch_size=5).matrix for k, other in (("a", clean), ("b", spurious))}
    probs = clean.predict(shapes.loader(shapes.items[0][1]))
    out, errors = {}, []

    def work(k, other):
        try:
            out[k] = cka_scan(clean, other, shapes, batch_size=5).matrix
            out[k + "p"] = clean.predict(shapes.loader(shapes.items[0][1]))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k, o)) for k, o in (("a", clean), ("b", spurious))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    # same batches, same forward passes: the thread-local hooks must not mix features, which would move values by
    # far more than rounding; equal up to float64 rounding of the same arithmetic
    np.testing.assert_array_equal(out["a"], serial["a"])
    np.testing.assert_array_equal(out["b"], serial["b"])
    np.testing.assert_array_equal(out["ap"], probs)
    assert count_hooks(clean.net) == 0
