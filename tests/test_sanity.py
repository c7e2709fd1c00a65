"""Cascading model randomisation: runs on a copy, step 0 reproduces the original, full randomisation changes
gradient maps, and the shared model is untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_same_state, make_handle, model_state
from interpret.hooks import count_hooks
from interpret.sanity import cascading_randomization, default_blocks, execution_order, randomize_


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return make_handle(SmallNet(), size=32)


def test_blocks_and_order(small):
    # containers with several parameterised children are split (stem = conv + BN)
    assert default_blocks(small.net) == ["stem.0", "stem.1", "blocks.0", "blocks.1", "fc"]
    order = execution_order(small.net, torch.zeros(1, 3, 32, 32))
    assert order["stem"] < order["blocks.0"] < order["blocks.1"] < order["fc"]
    assert count_hooks(small.net) == 0


def test_cascade_on_a_copy(small):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = model_state(small.net)
    seen: list[float] = []
    res = cascading_randomization(small, x, 2, ["saliency", "gradient"], seed=0, progress=seen.append)
    assert_same_state(before, small.net)
    assert res.steps == ["none", "fc", "blocks.1", "blocks.0", "stem.1", "stem.0"]  # top layer first
    assert seen[-1] == 1.0 and len(seen) == 12
    for m in ("saliency", "gradient"):
        assert len(res.maps[m]) == 6
        assert res.rank_corr[m][0] == pytest.approx(1.0) and res.ssim[m][0] == pytest.approx(1.0)
        np.testing.assert_array_equal(res.maps[m][0], res.original[m])
        assert res.rank_corr[m][-1] < 0.5  # everything randomised: the map is another one
    assert res.signed == {"saliency": False, "gradient": True}


def test_layers_are_sorted_top_first_and_validated(small):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    res = cascading_randomization(small, x, 0, ["saliency"], layers=["stem", "fc"])
    assert res.steps == ["none", "fc", "stem"]
    with pytest.raises(ValueError, match="blocks.0"):
        cascading_randomization(small, x, 0, ["saliency"], layers=["nope"])


def test_callable_method_and_determinism(small):
    """Any function with the method contract works; the same seed randomises identically."""
    from interpret.saliency import saliency

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    a = cascading_randomization(small, x, 1, [saliency], layers=["fc", "blocks.1"], seed=5)
    b = cascading_randomization(small, x, 1, ["saliency"], layers=["fc", "blocks.1"], seed=5)
    for u, v in zip(a.maps["saliency"], b.maps["saliency"]):
        np.testing.assert_array_equal(u, v)


def test_randomize_changes_every_parameter():
    torch.manual_seed(0)
    net = SmallNet()
    old = [p.detach().clone() for p in net.parameters()]
    randomize_(net, torch.Generator().manual_seed(1))
    for p, q in zip(old, net.parameters()):
        assert not torch.equal(p, q)
    bn = net.stem[1]
    assert 0 <= bn.weight.min() and bn.weight.max() <= 1
