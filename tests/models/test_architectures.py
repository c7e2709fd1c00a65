"""The architecture catalog: torchvision + timm + packaged, CNNs only, the same logits as the source module."""
from __future__ import annotations

import io
import socket

import pytest
import timm
import torch
import torchvision.models as tvm
from torch import nn

from models import architectures as A
from models.checkpoints import CheckpointError, load_user_model
from models.default import LITE_PREPROCESS


def _save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _same_logits(handle, source: nn.Module, size: int = 64) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(handle.net(x), source(x))  # float32 default tolerances: same arithmetic
    assert not handle.net.training


@pytest.fixture(scope="module")
def timm_nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {n: timm.create_model(n, pretrained=False, num_classes=3).eval()
            for n in ("resnet18", "convnext_atto", "efficientnet_b0")}


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "efficientnet_b0"])
def test_timm_state_dicts_load_with_the_source_logits(timm_nets, name):
    net = timm_nets[name]
    h = load_user_model(f"timm:{name}", _save(net.state_dict()), f"{name}.pt")
    assert h.num_classes == 3 and h.labels == ["class 0", "class 1", "class 2"]
    _same_logits(h, net)
    cfg = timm.get_pretrained_cfg(name)
    assert h.preprocess.crop == cfg.input_size[-1]
    assert h.preprocess.resize == round(cfg.input_size[-1] / cfg.crop_pct)
    assert h.preprocess.mean == pytest.approx(cfg.mean) and h.preprocess.std == pytest.approx(cfg.std)


def test_a_bare_timm_name_is_accepted_where_torchvision_has_none(timm_nets):
    assert A.spec_for("convnext_atto") == A.ArchSpec("timm:convnext_atto", "convnext_atto (timm)", "timm")
    assert A.spec_for("resnet18").source == "torchvision"  # torchvision's name wins
    h = load_user_model("convnext_atto", _save(timm_nets["convnext_atto"].state_dict()), "c.pt")
    _same_logits(h, timm_nets["convnext_atto"])


@pytest.mark.parametrize("name", ["regnet_y_400mf", "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0"])
def test_torchvision_beyond_the_old_eight(name):
    torch.manual_seed(0)
    net = tvm.get_model_builder(name)(weights=None, num_classes=4).eval()
    assert name in A.catalog() and A.catalog()[name].source == "torchvision"
    h = load_user_model(name, _save(net.state_dict()), "w.pt", b"a\nb\nc\nd\n")
    assert h.labels == list("abcd")
    _same_logits(h, net)


def test_torchvision_preprocessing_comes_from_the_default_weights():
    for name in ("resnet18", "regnet_y_400mf", "efficientnet_b0"):
        t = tvm.get_model_weights(name).DEFAULT.transforms()
        pre = A.default_preprocess(name)
        assert (pre.resize, pre.crop) == (t.resize_size[0], t.crop_size[0])
        assert pre.mean == tuple(t.mean) and pre.std == tuple(t.std)
    assert A.default_preprocess("efficientnet_lite0") == LITE_PREPROCESS


def test_timm_preprocessing_is_read_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    pre = A.default_preprocess("timm:inception_v3")
    assert (pre.resize, pre.crop, pre.mean, pre.std) == (round(299 / 0.875), 299, (0.5,) * 3, (0.5,) * 3)
    tagged = A.default_preprocess("timm:resnet50.tv_in1k")  # a pretrained tag's own config
    cfg = timm.get_pretrained_cfg("resnet50.tv_in1k")
    assert tagged.resize == round(cfg.input_size[-1] / cfg.crop_pct)


def test_the_catalog_holds_cnns_only_and_lists_no_transformers():
    cat = A.catalog()
    assert list(cat)[0] == "efficientnet_lite0" and cat["efficientnet_lite0"].source == "packaged"
    assert {"resnet18", "maxvit_t", "convnext_tiny", "regnet_y_400mf"} <= set(cat)  # maxvit_t: a hybrid
    assert not [k for k in cat if k.startswith(("vit_", "swin_"))]
    names = A.timm_names()
    assert {"resnet18", "convnext_atto", "coatnet_0_rw_224", "levit_128s"} <= set(names)
    assert "vit_base_patch16_224" not in names or A.stored_index() is None


@pytest.mark.parametrize("key, kind", [("vit_b_16", "vision transformer"), ("swin_t", "vision transformer"),
                                       ("timm:vit_tiny_patch16_224", "vision transformer"),
                                       ("timm:mixer_b16_224", "MLP network")])
def test_transformers_are_refused_with_the_reason(key, kind):
    with pytest.raises(CheckpointError, match=kind) as e:
        A.spec_for(key)
    assert "kernel = stride" in str(e.value) and "refuses networks without sliding convolutions" in str(e.value)


@pytest.mark.parametrize("key", ["timm:coatnet_nano_rw_224", "timm:levit_128s", "maxvit_t"])
def test_convolutional_hybrids_are_accepted(key):
    assert A.spec_for(key).key == key


def test_conv_verdict_on_hand_built_networks():
    patchify = nn.Sequential(nn.Conv2d(3, 8, 16, stride=16), nn.Flatten(), nn.Linear(8, 2))
    pointwise = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8, 2))
    ok, why = A.conv_verdict(patchify)
    assert ok is False and "an MLP network on image patches" in why
    assert "0 (16×16 kernel, stride 16)" in why
    assert A.conv_verdict(pointwise)[0] is False
    assert A.conv_verdict(nn.Sequential(nn.Linear(4, 2)))[1].count("no 2-D convolutions") == 1
    # a kernel larger than its stride along one axis is enough
    assert A.conv_verdict(nn.Sequential(nn.Conv2d(3, 8, (1, 3), stride=1))) == (True, "")
    assert A.conv_verdict(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2))) == (True, "")
    assert A.conv_verdict(nn.Sequential(nn.Conv2d(3, 8, 2, stride=2)))[0] is False


def test_unknown_names_get_close_matches():
    with pytest.raises(CheckpointError, match=r"Unknown timm model 'resnet181'.*timm:resnet18") as e:
        A.spec_for("timm:resnet181")
    assert str(e.value).count(",") <= 4  # at most five matches
    with pytest.raises(CheckpointError, match=r"Unknown architecture .*'resnt18'.*resnet18"):
        A.spec_for("resnt18")
    with pytest.raises(CheckpointError, match="Unknown"):
        load_user_model("timm:no_such_net", b"irrelevant", "w.pt")


def test_classifier_keys():
    assert A.classifier_key("resnet18") == "fc.weight"
    assert A.classifier_key("squeezenet1_1") == "classifier.1.weight"  # a 1×1 convolution
    assert A.classifier_key("timm:convnext_atto") == "head.fc.weight"
    assert A.classifier_key("efficientnet_lite0") == "_fc.weight"


def test_build_needs_a_class_and_is_in_eval_mode():
    with pytest.raises(CheckpointError, match="at least one output class"):
        A.build("resnet18", 0)
    net = A.build("timm:resnet18", 2)
    assert not net.training and net.fc.out_features == 2


def test_meta_build_matches_the_cpu_build_shapes_and_allocates_nothing():
    """RegNet reads tensor values while it builds, so it cannot run on plain ``meta``: the fallback still gives
    the CPU build's shapes, with every large parameter on ``meta``."""
    cpu = tvm.regnet_y_400mf(num_classes=5).state_dict()
    meta = A.meta_build("regnet_y_400mf", 5).state_dict()
    assert {k: tuple(v.shape) for k, v in meta.items()} == {k: tuple(v.shape) for k, v in cpu.items()}
    assert all(v.is_meta for v in meta.values() if v.numel() >= 4096)
