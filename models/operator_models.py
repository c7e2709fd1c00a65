"""Operator-provided architectures: a folder named by ``CNN_LENS_MODELS_DIR`` holding ``NAME.py`` + weights.

This is how a teacher brings a network trained elsewhere. ``NAME.py`` is code the server operator put there
(trusted like the app itself); it must define ``build()`` returning an ``nn.Module`` (or a class ``Net``), and
may define ``LABELS`` (list of names), ``DISPLAY_NAME`` and ``PREPROCESS`` (dict with resize, crop, mean, std).
The weights next to it (``NAME.safetensors``, ``NAME.pt`` or ``NAME.pth``) are loaded safely, like uploads.
Labels may also come from ``NAME.labels.txt`` / ``NAME.labels.json``.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import CheckpointError, check_against, read_labels, read_state_dict
from .handle import ModelHandle, Preprocess

ENV_VAR = "CNN_LENS_MODELS_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
DEFAULT_PRE = {"resize": 256, "crop": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@dataclass(frozen=True)
class OperatorSpec:
    key: str
    name: str
    code: Path
    weights: Path | None
    source: str
    error: str | None


def models_dir() -> Path | None:
    d = os.environ.get(ENV_VAR, "").strip()
    return Path(d).expanduser() if d else None


def discover() -> list[OperatorSpec]:
    """One spec per ``NAME.py`` in the folder; ``error`` says why an entry cannot be loaded."""
    d = models_dir()
    if d is None or not d.is_dir():
        return []
    out = []
    for code in sorted(d.glob("*.py")):
        if code.name.startswith("_"):
            continue
        stem = code.stem
        weights = next((code.with_suffix(s) for s in WEIGHT_SUFFIXES if code.with_suffix(s).is_file()), None)
        err = None if weights else (f"no weights next to {code.name} (expected {stem}.safetensors, {stem}.pt "
                                    f"or {stem}.pth)")
        out.append(OperatorSpec(f"op:{stem}", f"{stem} (operator)", code, weights, str(d), err))
    return out


def _import(code: Path):
    name = f"cnn_lens_operator_{code.stem}"
    spec = importlib.util.spec_from_file_location(name, code)
    if spec is None or spec.loader is None:
        raise CheckpointError(f"{code.name} cannot be imported")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - report any error in the operator's file
        sys.modules.pop(name, None)
        raise CheckpointError(f"{code.name} failed to import: {type(e).__name__}: {e}") from None
    return mod


def load(spec: OperatorSpec) -> ModelHandle:
    """Build the operator's network and load its weights (CheckpointError with a clear reason on failure)."""
    if spec.weights is None:
        raise CheckpointError(spec.error or "no weights")
    mod = _import(spec.code)
    builder = getattr(mod, "build", None) or getattr(mod, "Net", None)
    if builder is None:
        raise CheckpointError(f"{spec.code.name} defines neither build() nor Net")
    net = builder()
    state = read_state_dict(spec.weights.read_bytes(), spec.weights.name)
    check_against(net, state, spec.name)
    net.load_state_dict(state, strict=True)
    net.eval()
    pre = {**DEFAULT_PRE, **getattr(mod, "PREPROCESS", {})}
    n = _num_classes(net, int(pre["crop"]), spec.code.name)
    labels = getattr(mod, "LABELS", None)
    if labels is not None and len(labels) != n:
        raise CheckpointError(f"{spec.code.name}: LABELS names {len(labels)} classes but the network has {n} "
                              "outputs.")
    if labels is None:
        for suffix in (".labels.txt", ".labels.json"):
            p = spec.code.with_name(spec.code.stem + suffix)
            if p.is_file():
                labels = read_labels(p.read_bytes(), n)
                break
    if labels is None:
        labels = read_labels(None, n)
    return ModelHandle(key=spec.key, name=getattr(mod, "DISPLAY_NAME", spec.name), net=net,
                       preprocess=Preprocess(int(pre["resize"]), int(pre["crop"]), tuple(pre["mean"]),
                                             tuple(pre["std"])),
                       labels=list(labels), source=f"{spec.code} + {spec.weights.name}", family="operator")


def _num_classes(net, crop: int, name: str) -> int:
    """Class count from one forward pass on zeros (the output width); at least one, or CheckpointError."""
    import torch

    with torch.no_grad():
        out = net(torch.zeros(1, 3, crop, crop))
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"{name}: the network must return one row of class scores per image, (batch, "
                              f"classes); it returned {shape}.")
    if out.shape[1] < 1:
        raise CheckpointError(f"{name}: the network has no output classes (its output is {tuple(out.shape)}); a "
                              "classifier needs at least one.")
    return int(out.shape[1])
