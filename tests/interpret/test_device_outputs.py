"""What leaves the device is CPU numpy: every registered method, the unit views and the evaluation functions return
numpy arrays (never tensors) for a handle on the device; and, read from the source, no ``.numpy()`` is called on
a tensor that was not brought to the CPU first."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import handle_on, make_handle
from interpret.attribution.registry import METHODS, explain
from interpret.evaluation.metrics import deletion_insertion
from interpret.evaluation.sanity import cascading_randomization
from interpret.units.synthesis import objectives as SO, render as syn
from interpret.units import top_patches as tp
from interpret.units.activations import layer_activations
from interpret.units.filters import filter_bank, rgb_filters
from interpret.units.receptive_field import gradient_footprint

ROOT = Path(__file__).resolve().parents[2]

FAST = {"occlusion": dict(window=6, stride=4), "occlusion_approx": dict(window=6, stride=4),
        "lime": dict(num_samples=30, segmentation="slic"), "lime_fast": dict(num_samples=30, segmentation="slic"),
        "integrated_gradients": dict(steps=4), "smoothgrad": dict(samples=3)}


class GapNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                                      nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _arrays(obj, path="result"):
    """(path, value) of every array-like reachable in a result (dicts, lists, tuples, dataclass fields)."""
    if torch.is_tensor(obj):
        yield path, obj
    elif isinstance(obj, np.ndarray):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _arrays(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _arrays(v, f"{path}[{i}]")
    elif hasattr(obj, "__dataclass_fields__"):
        for k in obj.__dataclass_fields__:
            yield from _arrays(getattr(obj, k), f"{path}.{k}")


def _assert_numpy(obj, what):
    found = list(_arrays(obj))
    assert found, what
    bad = [p for p, v in found if torch.is_tensor(v)]
    assert not bad, f"{what}: tensors instead of numpy at {bad}"


@pytest.fixture
def gap_handle(device):
    return handle_on(make_handle(GapNet(), 24, 4), device)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_returns_numpy(method, gap_handle, device):
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))  # on the CPU: moved by the method
    params = dict(FAST.get(method, {}))
    res = explain(gap_handle, x, 1, method, **{k: v for k, v in params.items()
                                                if k in {p.name for p in METHODS[method].params}})
    assert isinstance(res.map, np.ndarray) and res.map.shape == (24, 24)
    _assert_numpy(res, method)


def test_units_and_evaluation_return_numpy(gap_handle, device):
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    acts = layer_activations(gap_handle, x, "features.2")
    assert isinstance(acts.maps, np.ndarray)
    assert isinstance(gradient_footprint(gap_handle, "features.2", 0, (5, 5), x), np.ndarray)
    _assert_numpy(rgb_filters(filter_bank(gap_handle)), "filters")
    _assert_numpy(deletion_insertion(gap_handle, x, 1, np.random.default_rng(0).random((24, 24)), steps=4),
                  "deletion/insertion")
    res = syn.synthesize(gap_handle, SO.channel("features.2", 1), syn.preset("quick", steps=2, size=24))
    assert isinstance(res.images, np.ndarray)
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
            for _ in range(3)]
    scan = tp.scan(gap_handle, imgs, "features.2", channels=[0], k=2, batch_size=2)
    assert all(isinstance(p.patch, np.ndarray) for p in scan.patches[0])
    san = cascading_randomization(gap_handle, x, 1, ["gradient"], layers=["fc", "features.2"])
    _assert_numpy(san, "sanity")
    assert gap_handle.predict(x).dtype == np.float32


# ---------------------------------------------------------------- source level
def _calls_cpu(node: ast.AST) -> bool:
    """Whether the expression brings its tensor to the CPU somewhere: ``.cpu()``, ``cpu64(…)``, ``to_numpy(…)``."""
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Attribute) and f.attr == "cpu":
                return True
            if isinstance(f, ast.Name) and f.id in ("cpu64", "to_numpy"):
                return True
    return False


def test_no_bare_numpy_on_a_device_tensor():
    """Outside ``interpret/plots`` (which get numpy already), every ``x.numpy()`` has a ``.cpu()`` (or the helpers
    ``cpu64`` / ``to_numpy``, which call it) in ``x``. A ``.numpy()`` on a tensor still on a GPU raises at run time
    there only, so this is checked here, where there is no GPU."""
    bad = []
    for path in sorted((ROOT / "interpret").rglob("*.py")):
        if "plots" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "numpy"
                    and not n.args and not _calls_cpu(n.func.value)):
                bad.append(f"{path.relative_to(ROOT)}:{n.lineno}")
    assert not bad, f".numpy() without .cpu(): {bad}"


def test_no_tensor_factory_without_a_device_in_hot_paths():
    """``torch.zeros/ones/full/empty/arange/tensor`` inside the engines and methods name a device (or copy one with
    ``*_like``), except where the result is documented CPU-only (seeded noise is drawn on the CPU, then moved)."""
    factories = {"zeros", "ones", "full", "empty", "arange", "tensor", "eye", "linspace"}
    allowed = {  # file: factories whose CPU placement is intended
        "interpret/attribution/lime_fast.py": {"eye"},  # the ridge fit is float64 on the CPU (MPS has none)
        "interpret/core/layers.py": {"zeros"},  # probe moved by Capture.run
        "interpret/evaluation/sanity.py": {"empty"},  # random weights drawn on the CPU from the seeded generator
    }
    bad = []
    for path in sorted((ROOT / "interpret").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if "plots" in path.parts or "cli" in path.parts or "scale" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in factories
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"
                    and not any(k.arg == "device" for k in n.keywords)
                    and n.func.attr not in allowed.get(rel, set())):
                bad.append(f"{rel}:{n.lineno} torch.{n.func.attr}")
    assert not bad, f"tensor factories without device=: {bad}"
