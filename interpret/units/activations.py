"""Feature maps of any layer (by module path) for one image, with per-channel statistics for sorting.

A module called several times in one forward pass (torchvision ResNet's ``relu``: after conv1 and after the
residual add of every block) produces one output per call. ``call_index`` picks one; the default ``-1`` is
the last call — for ResNet's relu that is the block output, the map usually meant. The receptive-field
table uses the same numbering (``RFTable.row(layer, call_index)``), so a unit's box always matches its map.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from interpret.core.errors import InputError
from interpret.core.layers import capture
from interpret.core.tensors import on_device, to_numpy
from interpret.units.receptive_field import rf_table, unit_box as _box


@dataclass
class ActivationMaps:
    """Output of one call of one layer for one image: ``maps`` is (C, h, w) float32 (a vector output
    (C,) is stored as (C, 1, 1))."""

    layer: str
    maps: np.ndarray
    call_index: int
    n_calls: int
    input_size: tuple[int, int]
    seconds: float = 0.0
    params: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.maps.shape[0])

    def stats(self) -> dict[str, np.ndarray]:
        """Per channel: mean, max, min, and the (i, j) of the maximum (first in row-major order)."""
        c, h, w = self.maps.shape
        flat = self.maps.reshape(c, -1)
        arg = flat.argmax(1)
        return {"channel": np.arange(c), "mean": flat.mean(1), "max": flat.max(1), "min": flat.min(1),
                "argmax_i": arg // w, "argmax_j": arg % w}

    def order(self, by: str = "max", descending: bool = True) -> np.ndarray:
        """Channel indices sorted by ``"mean"``, ``"max"`` or ``"channel"`` (stable: ties keep index order)."""
        if by == "channel":
            idx = np.arange(self.channels)
            return idx[::-1].copy() if descending else idx
        if by not in ("mean", "max", "min"):
            raise InputError(f"sort by 'mean', 'max', 'min' or 'channel', not {by!r}")
        key = self.stats()[by]
        return np.argsort(-key if descending else key, kind="stable")

    def records(self, by: str = "max") -> list[dict]:
        """Per-channel statistics as plain dicts, sorted, for a table widget."""
        s = self.stats()
        return [{k: (int(s[k][c]) if k in ("channel", "argmax_i", "argmax_j") else float(s[k][c])) for k in s}
                for c in self.order(by)]


def layer_activations(handle, image: Image.Image | torch.Tensor, layer: str, call_index: int = -1) -> ActivationMaps:
    """Feature maps of ``layer`` for one image (PIL image, or a normalized (1, 3, H, W) / (3, H, W) tensor)."""
    t0 = time.perf_counter()
    x = image if isinstance(image, torch.Tensor) else handle.input_tensor(image)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    x = on_device(handle, x)
    with capture(handle, layer, call_index) as cap:
        cap.run(x)
    o = cap.output[0].float()
    if o.dim() == 1:
        o = o[:, None, None]
    elif o.dim() != 3:
        raise InputError(f"layer {layer!r} output has shape {tuple(o.shape)}; expected (C, h, w) or (C,)")
    n = cap.n_calls
    return ActivationMaps(layer, to_numpy(o), call_index % n, n, (int(x.shape[2]), int(x.shape[3])),
                          time.perf_counter() - t0, {"layer": layer, "call_index": call_index})


def unit_box(handle, acts: ActivationMaps, unit: tuple[int, int], clip: bool = True) -> tuple[int, int, int, int]:
    """Receptive field (y0, x0, y1, x1), half-open, of cell (i, j) of these maps on the model's input image."""
    return _box(rf_table(handle, acts.input_size), acts.layer, unit, clip=clip, call_index=acts.call_index)
