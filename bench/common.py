"""Shared set-up of the benchmarks."""
from __future__ import annotations

import time

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


def interleaved_times(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of every call of each function after one warm-up call each; every round runs all of them (order
    rotated each round), so load from other processes hits ours and the peer's alike."""
    for fn in fns.values():
        fn()  # warm-up (also fills per-network caches such as the default Grad-CAM layer)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times
