"""Receptive fields: published / hand-derived tables for torchvision nets, and the analytic box against the
empirical gradient footprint on linearised copies of small networks (chain, residual, dilated, branches)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from interpret.core.hooks import count_hooks
from interpret.units.receptive_field import (gradient_footprint, linearized_copy, mask_bbox, rf_table, unit_box)


@pytest.fixture(scope="module")
def vgg16_table():
    return rf_table(torchvision.models.vgg16(weights=None).eval())


@pytest.fixture(scope="module")
def alexnet_table():
    return rf_table(torchvision.models.alexnet(weights=None).eval())


# torchvision VGG16 ``features`` index → (r, S, P). r and S at every layer are the values of the published
# receptive-field tables for VGG16 (e.g. conv5_3 196/16, pool5 212/32); pool5's (212, 32, 90) is the vgg_16 row
# of Araujo et al., Distill 2019, Table 1. P at the other layers follows from P' = P + p·S (p = 1 for every
# conv, 0 for every pool) — VGG's layers are symmetric, so P = (r − 1)/2 − (S − 1)/2 at every conv.
VGG16 = {
    0: (3, 1, 1), 2: (5, 1, 2), 4: (6, 2, 2),  # conv1_1, conv1_2, pool1
    5: (10, 2, 4), 7: (14, 2, 6), 9: (16, 4, 6),  # conv2_x, pool2
    10: (24, 4, 10), 12: (32, 4, 14), 14: (40, 4, 18), 16: (44, 8, 18),  # conv3_x, pool3
    17: (60, 8, 26), 19: (76, 8, 34), 21: (92, 8, 42), 23: (100, 16, 42),  # conv4_x, pool4
    24: (132, 16, 58), 26: (164, 16, 74), 28: (196, 16, 90), 30: (212, 32, 90),  # conv5_x, pool5
}

# torchvision AlexNet (the one-GPU variant: 64-192-384-256-256 filters, conv1 11×11/4 pad 2): r and S as in
# the published tables (conv5: 163/16, pool5: 195/32); P from P' = P + p·S with paddings 2, 2, 1, 1, 1.
ALEXNET = {
    0: (11, 4, 2), 2: (19, 8, 2), 3: (51, 8, 18), 5: (67, 16, 18),
    6: (99, 16, 34), 8: (131, 16, 50), 10: (163, 16, 66), 12: (195, 32, 66),
}

# torchvision ResNets are "v1.5": the stride-2 of each stage sits in the first block's 3×3 conv (BasicBlock:
# conv1; Bottleneck: conv2), and the stem is conv 7×7/2 pad 3 → max-pool 3×3/2 pad 1. The published
# resnet_v1_50 row of Araujo et al. (483, 32, 239) is for TF-slim's v1 (stride in the *last* unit of each block,
# "SAME" pooling without left padding) and does not apply. Values below are derived by hand with
# r' = r + (k−1)·S, P' = P + p·S, union over the shortcut: stem → (7,2,3) → maxpool (11,4,5); each 3×3 adds
# (2S, ·, S). ResNet-18: layer1 = 11 + 4·8 = 43, P 21; layer2: +8 (stride conv at S=4) +3·16 → 99, P 49;
# layer3: +16 +3·32 → 211, P 105; layer4: +32 +3·64 → 435, P 217 (the widely quoted 435 for ResNet-18).
# ResNet-50 (three 3×3 in layer1, four, six, three): layer1 11 + 3·8 = 35 (P 17); layer2 35 + 8 + 3·16 = 91
# (P 45); layer3 91 + 16 + 5·32 = 267 (P 133); layer4 267 + 32 + 2·64 = 427 (P 213). The slow test below
# checks the ResNet-18 numbers against the gradient footprint of the real architecture.
RESNET18 = {"maxpool": (11, 4, 5), "layer1": (43, 4, 21), "layer2": (99, 8, 49), "layer3": (211, 16, 105),
            "layer4": (435, 32, 217)}
RESNET50 = {"maxpool": (11, 4, 5), "layer1": (35, 4, 17), "layer2": (91, 8, 45), "layer3": (267, 16, 133),
            "layer4": (427, 32, 213)}


def _rsp(row):
    assert row.r[0] == row.r[1] and row.S[0] == row.S[1] and row.P[0] == row.P[1]
    return (row.r[0], row.S[0], row.P[0])


def test_vgg16_every_layer(vgg16_table):
    assert vgg16_table.method == "fake"
    for idx, want in VGG16.items():
        assert _rsp(vgg16_table.row(f"features.{idx}")) == want, idx
    # ReLUs keep the field of the conv before them.
    assert _rsp(vgg16_table.row("features.29")) == VGG16[28]
    assert vgg16_table.row("features.30").size == (7, 7)


def test_alexnet_every_layer(alexnet_table):
    for idx, want in ALEXNET.items():
        assert _rsp(alexnet_table.row(f"features.{idx}")) == want, idx


@pytest.mark.parametrize("arch,want", [("resnet18", RESNET18), ("resnet50", RESNET50)])
def test_resnet_stage_ends(arch, want):
    table = rf_table(torchvision.models.get_model(arch, weights=None).eval())
    for layer, rsp in want.items():
        assert _rsp(table.row(layer)) == rsp, layer


def test_inception_v3_published():
    # Araujo et al., Distill 2019, Table 1: inception_v3 (299² input, all "VALID"/symmetric paddings as in
    # torchvision's port) r = 1311, S = 32, P = 618 at Mixed_7c.
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    assert _rsp(rf_table(net, (299, 299)).row("Mixed_7c")) == (1311, 32, 618)


def test_unit_box_clipped(vgg16_table):
    # conv5_3 unit (0, 0): u·S − P = −90 … −90 + 196 → clipped to the image.
    assert unit_box(vgg16_table, "features.28", (0, 0), clip=False) == (-90, -90, 106, 106)
    assert unit_box(vgg16_table, "features.28", (0, 0)) == (0, 0, 106, 106)
    assert unit_box(vgg16_table, "features.28", (13, 2)) == (13 * 16 - 90, 0, 224, 2 * 16 - 90 + 196)


def test_repeated_module_calls():
    table = rf_table(torchvision.models.resnet18(weights=None).eval())
    calls = table.calls("layer1.0.relu")
    assert len(calls) == 2
    assert _rsp(calls[0]) == (19, 4, 9)  # after conv1 of the block: maxpool (11, 4, 5) + one 3×3
    assert _rsp(table.row("layer1.0.relu")) == _rsp(table.row("layer1.0"))  # default: the last call


# ---- analytic box == gradient footprint on linearised small nets ---------------------------------------

class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 5, 2, 2)
        self.a1 = nn.ReLU()
        self.p1 = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.c2 = nn.Conv2d(4, 4, (3, 1), 1, (1, 0))
        self.p2 = nn.AvgPool2d(2)
        self.c3 = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        return self.c3(self.p2(self.c2(self.p1(self.a1(self.c1(x))))))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, 2, 1)
        self.b1 = nn.Conv2d(4, 4, 3, 2, 1)
        self.b2 = nn.Conv2d(4, 4, 3, 1, 1)
        self.down = nn.Conv2d(4, 4, 1, 2)
        self.relu = nn.ReLU()
        self.c3 = nn.Conv2d(4, 4, 3, 1, 1)

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = self.relu(self.b2(self.relu(self.b1(x))) + self.down(x))  # relu called three times
        return F.relu(self.c3(x) + x)


class Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 3, 3, 1, 1)
        self.c2 = nn.Conv2d(3, 3, 3, 1, 2, dilation=2)
        self.c3 = nn.Conv2d(3, 3, 3, 1, 4, dilation=4)
        self.c4 = nn.Conv2d(3, 2, 3, 2, 0, dilation=(1, 2))

    def forward(self, x):
        return self.c4(self.c3(self.c2(self.c1(x))))


class Branches(nn.Module):
    """Inception-like concat, a TF-"same" asymmetric pad and a depthwise conv."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.stem = nn.Conv2d(3, 4, 3, 2, 0)
        self.a = nn.Conv2d(4, 2, 1)
        self.b = nn.Conv2d(4, 2, 5, 1, 2)
        self.c = nn.MaxPool2d(3, 1, 1)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8)

    def forward(self, x):
        x = self.stem(self.pad(x))
        return self.dw(torch.cat([self.a(x), self.b(x), self.c(x)], 1))


def _units(h, w):
    return sorted({(0, 0), (h - 1, w - 1), (0, w - 1), (h // 2, w // 2), (h - 1, 0)})


@pytest.mark.parametrize("net_cls,dense", [(Chain, True), (Residual, True), (Dilated, False), (Branches, True)])
def test_box_equals_gradient_footprint(net_cls, dense, device):
    """The analytic boxes (also computed for a copy on the device: the same table) against the gradient
    footprints of the linearised copy on the device."""
    torch.manual_seed(0)
    net = net_cls().eval()
    size = (37, 41)
    table = rf_table(net, size)
    assert table.method == "fake"
    if device.type != "cpu":
        moved = rf_table(copy.deepcopy(net).to(device), size)
        assert [(r.name, r.call, r.r, r.S, r.P, r.size) for r in moved.rows] == \
            [(r.name, r.call, r.r, r.S, r.P, r.size) for r in table.rows]
    lin = linearized_copy(net).to(device)
    before = count_hooks(lin)
    x = torch.rand(1, 3, *size)
    names = {n for n, _ in net.named_modules() if n}
    checked = 0
    for row in table.rows:
        if row.name not in names:
            continue
        for unit in _units(*row.size):
            box = unit_box(table, row.name, unit, call_index=row.call)
            ch = min(2, row.channels - 1)  # depthwise: channel 2 comes from the widest branch
            mask = gradient_footprint(lin, row.name, ch, unit, x, call_index=row.call)
            if box[2] <= box[0] or box[3] <= box[1]:  # a unit that sees only padding
                assert not mask.any()
                continue
            assert mask_bbox(mask) == box, (row.name, row.call, unit)
            if dense:
                assert mask.sum() == (box[2] - box[0]) * (box[3] - box[1])
            checked += 1
    assert checked >= 15
    assert count_hooks(lin) == before


def test_dilated_footprint_has_holes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 1, 3, 1, 0, dilation=3)).eval()
    mask = gradient_footprint(linearized_copy(net), "0", 0, (2, 2), torch.rand(1, 3, 12, 12))
    assert mask_bbox(mask) == unit_box(rf_table(net, (12, 12)), "0", (2, 2)) == (2, 2, 9, 9)
    assert mask.sum() == 9


def test_untraceable_network_uses_a_real_pass():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 2, 3, 2, 1)
            self.c2 = nn.Conv2d(2, 2, 3, 1, 1)

        def forward(self, x):
            if x.sum() >= 0:  # data-dependent control flow: neither FX nor fake tensors can follow it
                x = F.max_pool2d(x, 3, 1, 1) + x
            return self.c2(self.c1(x))

    net = Dynamic().eval()
    with pytest.raises(Exception):
        rf_table(net, (16, 16), method="fx")
    table = rf_table(net, (16, 16))
    assert table.method == "forward" and "real" in table.note
    # max-pool 3/1 (r 3, P 1) ∪ identity, then conv 3/2 pad 1 → (5, 2, 2), conv 3/1 pad 1 → (9, 2, 4)
    assert _rsp(table.row("c1")) == (5, 2, 2) and _rsp(table.row("c2")) == (9, 2, 4)
    mask = gradient_footprint(linearized_copy(net), "c2", 0, (3, 3), torch.rand(1, 3, 16, 16))
    assert mask_bbox(mask) == unit_box(table, "c2", (3, 3)) == (2, 2, 11, 11)


@pytest.mark.parametrize("arch", ["alexnet", "resnet18", "mobilenet_v2", "squeezenet1_1"] + [
    pytest.param(a, marks=pytest.mark.slow) for a in ("vgg16", "resnet50", "googlenet", "densenet121")])
def test_two_implementations_agree(arch):
    """The function-mode tracer and the independent torch.fx implementation give the same table."""
    kw = {"aux_logits": False, "init_weights": False} if arch == "googlenet" else {}
    net = torchvision.models.get_model(arch, weights=None, **kw).eval()
    a, b = rf_table(net), rf_table(net, method="fx")
    key = lambda r: (r.name, r.call, r.r, r.S, r.P, r.size, r.kernel, r.stride, r.padding, r.dilation)
    names = {n for n, _ in net.named_modules()}
    assert [key(r) for r in a.rows] == [key(r) for r in b.rows if r.name in names]
    for c, rows in a.containers.items():
        assert [key(r)[2:6] for r in rows] == [key(r)[2:6] for r in b.calls(c)], c


@pytest.mark.slow
def test_resnet18_footprint_matches_table():
    """The hand-derived ResNet-18 layer4 numbers against the gradient of the real (linearised) architecture:
    at 448², unit (0, 0) ends at −P + r = 218 and unit (13, 13) starts at 13·32 − P = 199."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    lin = linearized_copy(net)
    x = torch.rand(1, 3, 448, 448)
    table = rf_table(net, (448, 448))
    for unit in [(0, 0), (13, 13), (0, 13)]:
        mask = gradient_footprint(lin, "layer4", 0, unit, x)
        assert mask_bbox(mask) == unit_box(table, "layer4", unit), unit


def test_efficientnet_lite_footprints_and_records():
    """The default architecture (random weights): depthwise 3×3/5×5 convs, stride-2 stages, skip adds."""
    from models.efficientnet_lite import efficientnet_lite0

    torch.manual_seed(0)
    net = efficientnet_lite0(num_classes=10).eval()
    table = rf_table(net, (96, 96))
    assert table.method == "fake"
    lin = linearized_copy(net)
    x = torch.rand(1, 3, 96, 96)
    for layer in ["_blocks.0", "_blocks.2", "_blocks.4", "_blocks.7"]:
        row = table.row(layer)
        for unit in [(0, 0), (row.size[0] - 1, row.size[1] - 1), (row.size[0] // 2, 1)]:
            mask = gradient_footprint(lin, layer, 0, unit, x)
            assert mask_bbox(mask) == unit_box(table, layer, unit), (layer, unit)
    # on the real (non-linear) network the footprint lies inside the analytic box
    mask = gradient_footprint(net, "_blocks.4", 3, (2, 2), x)
    y0, x0, y1, x1 = unit_box(table, "_blocks.4", (2, 2))
    inside = np.zeros_like(mask)
    inside[y0:y1, x0:x1] = True
    assert mask.any() and not (mask & ~inside).any()
    recs = table.to_records()
    assert recs[0]["layer"] == "_conv_stem" and recs[0]["r"] == 3 and recs[0]["S"] == 2
    assert len(table.to_dataframe()) == len(table.rows)
