"""Filters are exactly the layer's weights rearranged; activation maps equal independently computed outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from skimage import data
from torch import nn

from conftest import handle_on
from interpret.units import activations as A
from interpret.units import filters as Fl
from interpret.plots import units as UP
from interpret.core.hooks import count_hooks
from models.handle import ModelHandle, Preprocess


def tiny_handle(net: nn.Module, size: int = 32) -> ModelHandle:
    return ModelHandle(key="tiny", name="tiny", net=net.eval(),
                       preprocess=Preprocess(resize=size, crop=size, mean=(0.5,) * 3, std=(0.25,) * 3),
                       labels=[f"c{i}" for i in range(4)], source="test")


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return tiny_handle(torchvision.models.alexnet(weights=None, num_classes=4), size=96)


@pytest.mark.parametrize("mode", ["minmax", "symmetric"])
def test_first_layer_images_are_the_weights(alexnet, mode):
    bank = Fl.filter_bank(alexnet)  # default: first conv layer
    assert bank.layer == "features.0" and bank.is_rgb and bank.weight.shape == (64, 3, 11, 11)
    fi = Fl.rgb_filters(bank, mode)
    assert fi.images.shape == (64, 11, 11, 3)
    assert fi.images.min() >= 0 and fi.images.max() <= 1 + 1e-6
    w = alexnet.net.features[0].weight.detach().numpy()
    # Invert the documented per-filter normalization: exactly the weights, channels last.
    np.testing.assert_allclose(fi.weights(), w.transpose(0, 2, 3, 1), rtol=0, atol=1e-6)
    if mode == "minmax":  # every filter spans the full range
        np.testing.assert_allclose(fi.images.reshape(64, -1).min(1), 0, atol=1e-7)
        np.testing.assert_allclose(fi.images.reshape(64, -1).max(1), 1, atol=1e-6)
        f3 = w[3]
        want3 = (f3 - f3.min()) / (f3.max() - f3.min())
        np.testing.assert_allclose(fi.images[3], want3.transpose(1, 2, 0), atol=1e-6)
    else:  # zero is mid-grey
        f3 = w[3]
        np.testing.assert_allclose(fi.images[3], (0.5 + f3 / (2 * np.abs(f3).max())).transpose(1, 2, 0), atol=1e-6)


def test_deeper_and_depthwise_views():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 5, groups=6), nn.Conv2d(6, 4, 3, groups=2))
    bank = Fl.filter_bank(net, "2")
    w = net[2].weight.detach().numpy()
    g = Fl.kernel_grid(bank, 3)
    assert g.images.shape == (3, 3, 3)
    np.testing.assert_allclose(g.weights(), w[3], atol=1e-6)
    assert list(bank.input_channels_of(3)) == [3, 4, 5] and list(bank.input_channels_of(0)) == [0, 1, 2]
    np.testing.assert_allclose(Fl.filter_norms(bank), np.sqrt((w ** 2).sum((2, 3))), rtol=1e-6)
    dw = Fl.filter_bank(net, "1")
    assert dw.depthwise and not dw.is_rgb
    d = Fl.depthwise_kernels(dw)
    assert d.images.shape == (6, 5, 5)
    np.testing.assert_allclose(d.weights(), net[1].weight.detach().numpy()[:, 0], atol=1e-6)
    st = bank.stats()
    np.testing.assert_allclose(st["max"], w.reshape(4, -1).max(1))
    with pytest.raises(ValueError, match="3 input channels|colour"):
        Fl.rgb_filters(bank)
    with pytest.raises(ValueError, match="not a Conv2d"):
        Fl.filter_bank(nn.Sequential(nn.ReLU()), "0")
    # figures build and carry hover text
    fig = UP.filters_figure(Fl.rgb_filters(Fl.filter_bank(net)), Fl.filter_bank(net))
    assert "filter 0" in str(fig.data[0].hovertext[1][1])
    assert UP.kernel_grid_figure(Fl.kernel_grid(bank, 3), bank, 3).data
    assert UP.filter_norms_figure(Fl.filter_norms(bank), bank.layer).data
    assert UP.depthwise_figure(Fl.depthwise_kernels(dw), dw).data


def test_activations_equal_truncated_network(alexnet, device):
    """On each device, against the truncated network (no hooks) on the same device."""
    alexnet = handle_on(alexnet, device)
    img = Image.fromarray(data.chelsea())
    before = count_hooks(alexnet.net)
    acts = A.layer_activations(alexnet, img, "features.10")
    assert count_hooks(alexnet.net) == before
    x = alexnet.input_tensor(img)
    with torch.no_grad():
        want = alexnet.net.features[:11](x)[0].cpu().numpy()  # truncated network, no hooks
    assert acts.maps.shape == want.shape
    np.testing.assert_allclose(acts.maps, want, rtol=1e-5, atol=1e-6)
    st = acts.stats()
    np.testing.assert_allclose(st["mean"], want.mean((1, 2)), rtol=1e-5, atol=1e-6)
    order = acts.order("max")
    assert list(order) == list(np.argsort(-want.max((1, 2)), kind="stable"))
    c = int(order[0])
    i, j = int(st["argmax_i"][c]), int(st["argmax_j"][c])
    assert want[c, i, j] == want[c].max()
    # choosing a cell gives its receptive field: features.10 is conv5 (r=163, S=16, P=66) on a 96² input
    assert A.unit_box(alexnet, acts, (1, 2)) == (0, 0, 96, 96)
    assert A.unit_box(alexnet, acts, (1, 2), clip=False) == (16 - 66, 32 - 66, 16 - 66 + 163, 32 - 66 + 163)
    fig = UP.activation_grid_figure(acts, order=order, max_maps=16, cols=4)
    assert fig.data[0].z.shape[0] > want.shape[1]
    h, w = want.shape[1:]
    # a click on tile 5 (row 1, col 1 of a 4-wide grid), cell (2, 3), maps back to that channel and unit
    x, y = 1 * (w + 1) + 3, 1 * (h + 1) + 2
    assert UP.grid_cell(fig.layout.meta, x, y) == (int(order[5]), 2, 3)
    assert fig.data[0].customdata[y][x][0] == order[5]
    assert abs(fig.data[0].customdata[y][x][3] - want[order[5], 2, 3]) < 1e-5
    assert UP.grid_cell(fig.layout.meta, w, 0) is None  # the gap between tiles
    view = alexnet.preprocess.to_display(alexnet.input_tensor(img)[0])
    box = A.unit_box(alexnet, acts, (1, 2))
    assert UP.image_box_figure(view, box, footprint=np.ones(view.shape[:2], bool)).layout.shapes
    from interpret.units.receptive_field import rf_table
    assert UP.rf_growth_figure(rf_table(alexnet)).data
    assert UP.channel_map_figure(acts, c).data


def test_repeated_module_call_index():
    """ResNet's relu: call 0 is after bn1, the last call is the block output (= layer1.0's output)."""
    torch.manual_seed(0)
    h = tiny_handle(torchvision.models.resnet18(weights=None, num_classes=4), size=64)
    x = torch.randn(1, 3, 64, 64)
    last = A.layer_activations(h, x, "layer1.0.relu")
    first = A.layer_activations(h, x, "layer1.0.relu", call_index=0)
    assert last.n_calls == 2 and last.call_index == 1 and first.call_index == 0
    net = h.net
    with torch.no_grad():
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))  # manual forward
        b = net.layer1[0]
        a0 = torch.relu(b.bn1(b.conv1(y)))
        a1 = torch.relu(b.bn2(b.conv2(a0)) + y)
    np.testing.assert_allclose(first.maps, a0[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last.maps, a1[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(A.layer_activations(h, x, "layer1.0").maps, last.maps)
    assert A.unit_box(h, first, (0, 0), clip=False) == (-9, -9, 10, 10)  # (19, 4, 9)
    assert A.unit_box(h, last, (0, 0), clip=False) == (-13, -13, 14, 14)  # (27, 4, 13)
    with pytest.raises(ValueError, match="called 2 time"):
        A.layer_activations(h, x, "layer1.0.relu", call_index=2)
