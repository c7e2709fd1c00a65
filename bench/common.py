"""Shared set-up of the benchmarks."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from skimage import data


def lime_setup(h):
    """(x, predicted target, display image, the classifier function a plain `lime` user writes) for chelsea."""
    x = h.input_tensor(Image.fromarray(data.chelsea()))
    with torch.inference_mode():
        target = int(h.net(x).argmax())
    image = h.preprocess.to_display(x[0]).astype(np.float64)

    def classifier_fn(images):
        batch = h.preprocess.normalize(torch.from_numpy(images).float().permute(0, 3, 1, 2))
        with torch.no_grad():
            return torch.softmax(h.net(batch), dim=1).numpy()

    return x, target, image, classifier_fn
