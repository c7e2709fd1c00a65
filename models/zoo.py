"""torchvision's pretrained ImageNet models through the standard weights API, from the local hub cache only."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from .handle import ModelHandle, Preprocess

# Registry key → torchvision builder name. The weights enum of each is found with get_model_weights.
ZOO: dict[str, str] = {
    "alexnet": "alexnet",
    "vgg16": "vgg16",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "googlenet": "googlenet",
    "mobilenet_v2": "mobilenet_v2",
    "densenet121": "densenet121",
    "squeezenet1_1": "squeezenet1_1",
}

DISPLAY = {
    "alexnet": "AlexNet", "vgg16": "VGG16", "resnet18": "ResNet-18", "resnet50": "ResNet-50",
    "googlenet": "GoogLeNet", "mobilenet_v2": "MobileNetV2", "densenet121": "DenseNet-121",
    "squeezenet1_1": "SqueezeNet 1.1",
}


class WeightsMissing(RuntimeError):
    """A torchvision weight file is not in the hub cache; the message says where to put it."""


def default_weights(arch: str):
    """The DEFAULT weights enum member of a torchvision architecture."""
    return tvm.get_model_weights(ZOO.get(arch, arch)).DEFAULT


def checkpoint_dir() -> Path:
    """torch hub's checkpoint folder ($TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class WeightsStatus:
    arch: str
    file_name: str
    path: Path
    url: str
    present: bool

    def message(self) -> str:
        """Plain instructions for putting the weight file in place."""
        return (
            f"Pretrained weights for {DISPLAY.get(self.arch, self.arch)} are not on this server: "
            f"the file `{self.file_name}` is missing from `{self.path.parent}`. On a machine with internet, "
            f"download {self.url} (or run `python -c \"import torchvision; torchvision.models.{ZOO.get(self.arch, self.arch)}"
            f"(weights='DEFAULT')\"` there and copy the file from its `~/.cache/torch/hub/checkpoints/`), then place it "
            f"at `{self.path}` (set TORCH_HOME to use another cache folder) and reload."
        )


def weights_status(arch: str) -> WeightsStatus:
    """Whether the DEFAULT weight file of ``arch`` is in the hub cache (looked up, never downloaded)."""
    w = default_weights(arch)
    name = os.path.basename(w.url)
    path = checkpoint_dir() / name
    return WeightsStatus(arch, name, path, w.url, path.is_file())


def build(arch: str, weights: bool = True) -> nn.Module:
    """The architecture in eval mode; with ``weights`` the cached ImageNet weights (WeightsMissing if absent)."""
    fn = tvm.get_model_builder(ZOO.get(arch, arch))
    if not weights:
        kwargs = {"aux_logits": False, "init_weights": False} if arch == "googlenet" else {}
        return fn(weights=None, **kwargs).eval()
    st = weights_status(arch)
    if not st.present:
        raise WeightsMissing(st.message())
    # The file is in the cache, so the standard API reads it from there (load_state_dict_from_url skips
    # the download for an existing file) and applies any per-architecture quirks (GoogLeNet's aux heads).
    net = fn(weights=default_weights(arch), progress=False)
    return net.eval()


def preprocess_for(arch: str) -> Preprocess:
    """Preprocessing taken from the weights' own transforms."""
    t = default_weights(arch).transforms()
    return Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std))


def labels_for(arch: str) -> list[str]:
    return list(default_weights(arch).meta["categories"])


def load(arch: str) -> ModelHandle:
    """Handle for a zoo model with its pretrained ImageNet weights (WeightsMissing if not cached)."""
    st = weights_status(arch)
    net = build(arch, weights=True)
    return ModelHandle(key=arch, name=f"{DISPLAY.get(arch, arch)} (ImageNet)", net=net,
                       preprocess=preprocess_for(arch), labels=labels_for(arch),
                       source=f"torchvision weights {st.file_name} from {st.path.parent}")


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, offline, from torchvision's weight metadata."""
    return list(tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
