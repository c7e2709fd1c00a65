"""The one handle type every model loader returns: network, preprocessing, labels, provenance, lock."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn
import torchvision.transforms.functional as TF

from .device import exact_float32, module_device


class LabelError(ValueError):
    """A class the network does not have (an index out of range, an unknown name) or a classifier without
    classes: a user's mistake, shown to them as its message."""


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side) → centre crop → [0, 1] tensor → (x − mean) / std.

    Every model here, torchvision's and EfficientNet-Lite's (x − 127)/128 on 0–255 pixels, fits this form, so
    methods can move between the display space ([0, 1] RGB) and the model's input space exactly.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def view(self, img: Image.Image) -> Image.Image:
        """The image as the model sees it (after resize and crop), still a PIL RGB image."""
        img = img.convert("RGB")
        img = TF.resize(img, self.resize, interpolation=TF.InterpolationMode.BILINEAR)
        return TF.center_crop(img, [self.crop, self.crop])

    def to_unit(self, img: Image.Image) -> torch.Tensor:
        """PIL image (already viewed) → float tensor (3, H, W) in [0, 1]."""
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] tensor (…, 3, H, W) → model input."""
        mean = torch.tensor(self.mean, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
        return (x01 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model input → [0, 1] tensor (not clipped)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return x * std + mean

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """PIL image → normalized model input (3, crop, crop)."""
        return self.normalize(self.to_unit(self.view(img)))

    def to_display(self, x: torch.Tensor) -> np.ndarray:
        """Normalized input (3, H, W) → H×W×3 float array in [0, 1] for plotting."""
        return self.denormalize(x.detach().cpu()).clamp(0, 1).permute(1, 2, 0).numpy()


@dataclass(eq=False)
class ModelHandle:
    """An eval-mode network with everything needed to feed it and to explain it.

    The network is shared between Streamlit sessions and threads: never change it. Code that registers hooks
    or swaps modules must hold ``lock`` for the whole forward/backward pass (see ``interpret.core.hooks``).
    """

    key: str
    name: str
    net: nn.Module
    preprocess: Preprocess
    labels: list[str]
    source: str
    family: str = "imagenet"
    notes: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        if not self.labels:
            raise LabelError(f"{self.name}: a classifier needs at least one output class")

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.preprocess.crop, self.preprocess.crop)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        """Where the network lives (its first parameter's or buffer's device; CPU if it has neither)."""
        return module_device(self.net)

    def to(self, device: torch.device | str) -> "ModelHandle":
        """Put the network on ``device`` and return this handle.

        Moves the network in place, so call it only at load time, before the handle is cached and shared (loaders
        build on the CPU; ``registry.load_model`` and the upload path move the new handle once)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        exact_float32(device)
        if self.device != device:
            with self.lock:
                self.net.to(device)
        return self

    def input_tensor(self, img: Image.Image) -> torch.Tensor:
        """PIL image → batch of one normalized input (1, 3, H, W) on the handle's device."""
        return self.preprocess(img).unsqueeze(0).to(self.device)

    @torch.no_grad()
    def predict(self, img_or_x: Image.Image | torch.Tensor) -> np.ndarray:
        """Softmax probabilities for one image (PIL image or normalized (1, 3, H, W) tensor), as CPU numpy."""
        x = img_or_x.to(self.device) if isinstance(img_or_x, torch.Tensor) else self.input_tensor(img_or_x)
        with self.lock:
            logits = self.net(x)
        return torch.softmax(logits.float(), dim=1)[0].detach().cpu().numpy()

    def topk(self, img: Image.Image, k: int = 5) -> list[tuple[int, str, float]]:
        """The k most probable classes as (index, label, probability)."""
        p = self.predict(img)
        idx = np.argsort(-p)[:k]
        return [(int(i), self.labels[i], float(p[i])) for i in idx]


def label_index(handle: ModelHandle, target: int | str) -> int:
    """Class index from an index or a label name (exact, then case-insensitive); LabelError if unknown."""
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < handle.num_classes:
            raise LabelError(f"class index {target} out of range 0..{handle.num_classes - 1}")
        return int(target)
    text = str(target).strip()
    if text.isdigit():
        return label_index(handle, int(text))
    if text in handle.labels:
        return handle.labels.index(text)
    low = [s.lower() for s in handle.labels]
    if text.lower() in low:
        return low.index(text.lower())
    raise LabelError(f"unknown class {target!r}")
