""""Which architecture is this?": exact fits only, checked against a brute-force search and a strict load."""
from __future__ import annotations

import io
import random
import re
import time

import pytest
import timm
import torch
import torchvision.models as tvm

from models import architectures as A
from models import finder
from models.checkpoints import CheckpointError, read_state_dict
from models.finder import find_architectures


def _save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return {n: timm.create_model(n, pretrained=False, num_classes=3).state_dict()
            for n in ("resnet18", "convnext_atto", "efficientnet_b0")}


def _loads_strictly(key: str, state: dict, n: int) -> bool:
    net = A.build(key, n)
    try:
        net.load_state_dict(A.drop_training_heads(A.spec_for(key).key, state), strict=True)
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "efficientnet_b0"])
def test_the_finder_names_the_architecture(files, name):
    calls = []
    fits = find_architectures(files[name], progress=lambda d, t: calls.append((d, t)))
    keys = [f.key for f in fits]
    assert f"timm:{name}" in keys
    assert all(f.num_classes == 3 for f in fits)
    assert calls and calls[-1][0] == calls[-1][1] and all(0 <= d <= t for d, t in calls)
    for f in fits[:4]:  # every fit takes the file in a strict load (the first few, to stay fast)
        assert _loads_strictly(f.key, files[name], f.num_classes), f.key


def test_identical_layouts_are_all_listed_best_first(files):
    """torchvision's and timm's ResNet-18 have the same keys and shapes: both are listed, torchvision first."""
    keys = [f.key for f in find_architectures(files["resnet18"])]
    assert keys.index("resnet18") < keys.index("timm:resnet18")
    effnets = [f.key for f in find_architectures(files["efficientnet_b0"])]
    assert {"timm:efficientnet_b0", "timm:tf_efficientnet_b0"} <= set(effnets)
    assert effnets.index("timm:efficientnet_b0") < effnets.index("timm:tf_efficientnet_b0")


def _brute_force_layouts(keys: list[str], n: int) -> dict[str, dict[str, tuple]]:
    """The slow oracle's half: every CNN among ``keys`` built for ``n`` classes, {key: {name: shape}}."""
    out = {}
    for key in keys:
        try:
            spec = A.spec_for(key)
        except CheckpointError:
            continue
        out[spec.key] = {k: tuple(v.shape) for k, v in A.meta_build(key, n).state_dict().items()}
    return out


def test_the_finder_agrees_with_a_brute_force_search(files):
    """On every torchvision builder and the timm families near the test files: the fits are exactly the
    architectures whose every key and shape equal the file's."""
    near = re.compile(r"^(resnet1|resnet34|convnext_(atto|femto|pico)|(tf_)?efficientnet_b0|mobilenetv3_small)")
    keys = list(tvm.list_models(module=tvm)) + ["timm:" + n for n in timm.list_models() if near.match(n)]
    layouts = _brute_force_layouts(keys, 3)
    assert len(layouts) > 80
    for name, state in files.items():
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        expected = {key for key, ref in layouts.items() if ref == shapes}
        assert expected, name
        assert {f.key for f in find_architectures(state)} & set(layouts) == expected, name


def test_the_stored_index_matches_the_installed_libraries():
    """A seeded sample of the shipped index, rebuilt live: same key signature, classifier and CNN verdict."""
    idx = A.stored_index()
    if idx is None:
        pytest.skip("the index was made with other timm/torchvision versions (the finder builds instead)")
    sample = random.Random(14).sample(sorted(idx), 12)
    for key in sample:
        live = finder.layout_entry(key)
        assert {k: idx[key][k] for k in ("sig", "cls", "cnn")} == {k: live[k] for k in ("sig", "cls", "cnn")}, key


def test_lightning_and_ema_checkpoints_are_found(files):
    sd = files["convnext_atto"]
    lightning = _save({"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 3,
                       "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1}]}]})
    assert "timm:convnext_atto" in [f.key for f in find_architectures(read_state_dict(lightning, "m.ckpt"))]
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in files["resnet18"].items()}
    ckpt = _save({"state_dict": files["resnet18"], "state_dict_ema": ema, "epoch": 9})
    for variant in ("raw", "ema"):
        keys = [f.key for f in find_architectures(read_state_dict(ckpt, "t.pth", variant))]
        assert "timm:resnet18" in keys and "resnet18" in keys


def test_a_vision_transformer_file_is_named_and_refused():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2).state_dict()
    with pytest.raises(CheckpointError, match=r"fits vit_tiny_patch16_224, which is refused: it is a vision "
                                              r"transformer"):
        find_architectures(vit)


def test_keys_that_fit_nothing_give_no_fit(files):
    state = dict(files["resnet18"])
    state["layer9.weight"] = torch.zeros(3, 3, 3, 3)
    assert find_architectures(state) == []
    wrong_shape = dict(files["resnet18"], **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    assert find_architectures(wrong_shape) == []


def test_googlenet_with_its_training_heads_is_found():
    torch.manual_seed(0)
    net = tvm.googlenet(weights=None, num_classes=4, aux_logits=True, init_weights=False)
    fits = find_architectures(net.state_dict())
    assert [f.key for f in fits] == ["googlenet"] and fits[0].num_classes == 4


def test_without_a_matching_index_every_architecture_is_built(files, monkeypatch):
    """Versions that differ from the index's stamp: the finder builds the candidates itself (here a short list
    stands for all of them)."""
    monkeypatch.setattr(finder, "stored_index", lambda: None)
    monkeypatch.setattr(finder, "all_keys", lambda: ["efficientnet_lite0", "resnet18", "timm:resnet18",
                                                     "timm:convnext_atto", "timm:vit_tiny_patch16_224"])
    finder._built.clear()
    try:
        calls = []
        fits = find_architectures(files["convnext_atto"], progress=lambda d, t: calls.append((d, t)))
        assert [f.key for f in fits] == ["timm:convnext_atto"]
        assert calls[-1] == (1, 1) and (5, 6) in calls
    finally:
        finder._built.clear()


def test_a_resnet18_file_is_found_within_a_click():
    state = tvm.resnet18(num_classes=10).state_dict()
    find_architectures(state)  # index loaded, catalog built
    t0 = time.perf_counter()
    fits = find_architectures(state)
    elapsed = time.perf_counter() - t0
    assert fits[0].key == "resnet18" and fits[0].num_classes == 10
    assert elapsed < 10, elapsed
