"""Model summary from a real forward pass: each leaf layer's type, output shape and parameter count."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.handle import ModelHandle

from interpret.core.hooks import hooked
from interpret.core.tensors import device_of


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    call: int  # 1 for the first call of a module in the forward pass, 2 for its second, …


def model_summary(handle: ModelHandle) -> list[LayerRow]:
    """One row per leaf-module call, in execution order, from a forward pass on a zero image."""
    rows: list[LayerRow] = []
    calls: dict[str, int] = {}
    h, w = handle.input_size
    with hooked(handle) as hs:
        for name, m in handle.net.named_modules():
            if not name or list(m.children()):
                continue
            n_params = sum(p.numel() for p in m.parameters(recurse=False))

            def rec(mod, inp, out, name=name, n_params=n_params):
                if torch.is_tensor(out):
                    calls[name] = calls.get(name, 0) + 1
                    rows.append(LayerRow(name, type(mod).__name__, tuple(out.shape[1:]), n_params, calls[name]))

            hs.forward(m, rec)
        with torch.no_grad():
            handle.net(torch.zeros(1, 3, h, w, device=device_of(handle)))
    return rows


def total_params(handle: ModelHandle) -> int:
    return sum(p.numel() for p in handle.net.parameters())
