"""CAM family against oracles: the CAM = Z·Grad-CAM and mean + bias = logit identities, captum's LayerGradCam,
a closed form of Grad-CAM++ on GAP + linear networks, and "not defined" where CAM does not apply."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from conftest import handle_on, make_handle, rel_err
from interpret.attribution import cam as C
from interpret.attribution.guided_backprop import guided_backprop
from interpret.core.layers import get_module
from interpret.core.errors import NotDefined

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TOL = 1e-5


class GapFc(nn.Module):
    """conv → ReLU → conv → ReLU6 → global average pool → dropout → one linear layer."""

    def __init__(self, classes: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(8, 10, 3, 2, 1), nn.ReLU6())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(10, classes)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.gap(self.body(x)), 1)))


def _check_cam_identities(h, x, target):
    c = C.cam(h, x, target)
    g = C.gradcam(h, x, target)
    z = c.extra["raw"].size
    assert rel_err(c.extra["raw"], z * g.extra["raw"]) <= TOL
    with torch.no_grad():
        logit = float(h.net(x)[0, target])
    assert abs(c.extra["raw"].mean() + c.extra["bias"] - logit) <= TOL * max(1.0, abs(logit))
    assert c.map.shape == tuple(x.shape[-2:]) and c.signed
    return c, g


def test_cam_identities_tiny():
    h = make_handle(GapFc(), 16)
    torch.manual_seed(3)
    x = torch.randn(1, 3, 16, 16)
    for target in range(6):
        c, g = _check_cam_identities(h, x, target)
    assert C.cam_head(h).layer == "body" and not C.cam_head(h).relu
    # the CAM at layer resolution is Σ_k W[c,k] A_k, computed here by hand
    with torch.no_grad():
        a = h.net.body(x)[0]
    expected = (h.net.fc.weight[5][:, None, None] * a).sum(0)
    assert rel_err(c.extra["raw"], expected) <= TOL


def test_cam_identities_resnet18(resnet18_handle, photos, device):
    h = handle_on(resnet18_handle, device)
    c, g = _check_cam_identities(h, h.input_tensor(photos["chelsea"]), 281)
    assert c.extra["layer"] == "layer4" and g.params["layer"] == "layer4"


@pytest.mark.slow
def test_cam_identities_default_model(default_handle, photos):
    h = default_handle
    c, g = _check_cam_identities(h, h.input_tensor(photos["coffee"]), 967)
    assert c.extra["layer"] == "_act_head" and g.params["layer"] == "_act_head"


@pytest.mark.slow
def test_cam_on_densenet_uses_relu_of_features(make_zoo_handle, photos):
    """DenseNet applies F.relu between `features` and the pooling: CAM is taken on relu(features) and the
    mean + bias = logit identity holds."""
    h = make_zoo_handle("densenet121", 64)
    x = h.input_tensor(photos["astronaut"])
    c = C.cam(h, x, 7)
    assert c.extra["layer"] == "relu(features)"
    with torch.no_grad():
        logit = float(h.net(x)[0, 7])
    assert abs(c.extra["raw"].mean() + c.extra["bias"] - logit) <= TOL * max(1.0, abs(logit))


@pytest.mark.parametrize("arch", ["vgg16", "alexnet", "squeezenet1_1"])
def test_cam_not_defined(arch, make_zoo_handle, vgg16_handle):
    h = vgg16_handle if arch == "vgg16" else make_zoo_handle(arch, 64)
    with pytest.raises(NotDefined, match="Grad-CAM"):
        C.cam(h, torch.randn(1, 3, 64, 64), 0)
    if arch != "squeezenet1_1":
        with pytest.raises(NotDefined, match="3 linear layers"):
            C.cam(h, torch.randn(1, 3, 64, 64), 0)
    C.gradcam(h, torch.randn(1, 3, 64, 64), 0)  # Grad-CAM still works there


@pytest.mark.parametrize("arch,layer", [("resnet18_handle", None), ("resnet18_handle", "layer3.0.conv1"),
                                        ("vgg16_handle", None), ("vgg16_handle", "features.28")])
def test_gradcam_agrees_with_captum(arch, layer, request, photos, device):
    """Raw map (before ReLU) and the upsampled ReLU map vs captum's LayerGradCam (on the same device) — also at
    an in-place ReLU (VGG16's default layer features.29) and at a conv followed by an in-place ReLU (features.28)."""
    h = handle_on(request.getfixturevalue(arch), device)
    x = h.input_tensor(photos["coffee"])
    ours = C.gradcam(h, x, 967, layer=layer)
    name = ours.params["layer"]
    assert name == (layer or {"resnet18_handle": "layer4", "vgg16_handle": "features.29"}[arch])
    lgc = LayerGradCam(h.net, get_module(h.net, name))
    raw = lgc.attribute(x.clone(), target=967, relu_attributions=False)
    assert rel_err(ours.extra["raw"], raw[0, 0]) <= TOL
    up = LayerAttribution.interpolate(F.relu(raw), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    assert rel_err(ours.map, up[0, 0]) <= TOL


@pytest.mark.slow
def test_gradcam_default_model_agrees_with_captum(default_handle, photos, device):
    h = handle_on(default_handle, device)
    x = h.input_tensor(photos["chelsea"])
    ours = C.gradcam(h, x, 281)
    raw = LayerGradCam(h.net, h.net._act_head).attribute(x.clone(), target=281, relu_attributions=False)
    assert rel_err(ours.extra["raw"], raw[0, 0]) <= TOL


def test_gradcam_pp_closed_form_on_gap_fc():
    """On GAP + linear, ∂y/∂A_kij = w_k / Z everywhere, so the Grad-CAM++ weight of channel k is
    Z · relu(w_k/Z) / (2 + S_k · w_k/Z) with S_k = Σ_ij A_kij (eq. 19 with S = exp(y))."""
    h = make_handle(GapFc(), 16)
    x = torch.randn(1, 3, 16, 16)
    res = C.gradcam_pp(h, x, 2)
    with torch.no_grad():
        a = h.net.body(x)[0].double()
    w = h.net.fc.weight[2].detach().double()
    z = a.shape[1] * a.shape[2]
    g = w / z
    s = a.sum((1, 2))
    expected = torch.where(g != 0, z * g.clamp(min=0) / (2 + s * g), torch.zeros_like(g))
    assert rel_err(res.extra["channel_weights"], expected) <= 1e-5
    assert rel_err(res.extra["raw"], (expected[:, None, None] * a).sum(0)) <= 1e-5


def test_guided_gradcam_is_the_product(resnet18_handle, photos, device):
    h = handle_on(resnet18_handle, device)
    x = h.input_tensor(photos["rocket"])
    res = C.guided_gradcam(h, x, 5, layer="layer3")
    gcam = C.gradcam(h, x, 5, layer="layer3").map
    gbp = guided_backprop(h, x, 5).extra["rgb"]
    assert rel_err(res.extra["rgb"], gbp * gcam[..., None]) <= TOL
    assert rel_err(res.map, np.abs(gbp * gcam[..., None]).max(-1)) <= TOL


def test_layer_errors(resnet18_handle):
    h = resnet18_handle
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="valid names"):
        C.gradcam(h, x, 0, layer="layer9")
    with pytest.raises(ValueError, match="spatial"):
        C.gradcam(h, x, 0, layer="fc")


def test_reused_module_layer_uses_last_call(resnet18_handle):
    """torchvision ResNet's `layer4.1.relu` is called twice; Grad-CAM there uses its last call (= layer4's
    output), so it equals Grad-CAM at layer4."""
    h = resnet18_handle
    x = torch.randn(1, 3, 64, 64)
    a = C.gradcam(h, x, 9, layer="layer4.1.relu")
    b = C.gradcam(h, x, 9, layer="layer4")
    assert rel_err(a.extra["raw"], b.extra["raw"]) <= TOL
