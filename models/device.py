"""Which device the networks run on: an explicit name, else ``CNN_LENS_DEVICE``, else CUDA, else Apple MPS, else CPU.

One device per model handle: loaders build on the CPU and the handle is moved once (``ModelHandle.to``) before it
is cached and shared, so every method run on that handle computes on that device.
"""
from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["DeviceError", "ENV_VAR", "available_devices", "exact_float32", "module_device", "resolve_device"]

ENV_VAR = "CNN_LENS_DEVICE"


class DeviceError(ValueError):
    """A device name that is unknown or not present on this machine (the message names what is available)."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device kinds usable here: "cpu" always, then "cuda" and "mps" when present."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if _mps_available():
        out.append("mps")
    return out


def _describe_available() -> str:
    names = available_devices()
    if "cuda" in names:
        n = torch.cuda.device_count()
        names[names.index("cuda")] = "cuda" if n == 1 else f"cuda, cuda:0 … cuda:{n - 1}"
    return ", ".join(names)


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``name`` if given, else $CNN_LENS_DEVICE if set, else the best one present.

    ``name`` may be "auto" (same as None), "cpu", "cuda", "cuda:N" or "mps"; DeviceError when it is not a device
    name or that device is not on this machine."""
    if name is None or (isinstance(name, str) and not name.strip()):
        name = os.environ.get(ENV_VAR, "").strip() or None
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    text = str(name).strip().lower() if not isinstance(name, torch.device) else str(name)
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {name!r}; available here: {_describe_available()}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} is not available: no CUDA GPU found; available here: "
                              f"{_describe_available()}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} is not available: this machine has {torch.cuda.device_count()} "
                              f"CUDA GPU(s); available here: {_describe_available()}")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {name!r} is not available: no Apple MPS device found; available here: "
                              f"{_describe_available()}")
        return torch.device("mps")
    raise DeviceError(f"device {name!r} is not supported (use cpu, cuda or mps); available here: "
                      f"{_describe_available()}")


def module_device(net: nn.Module) -> torch.device:
    """The device of a network's first parameter or buffer (CPU for a network that has neither)."""
    for t in net.parameters():
        return t.device
    for t in net.buffers():
        return t.device
    return torch.device("cpu")


def exact_float32(device: torch.device | str) -> None:
    """Make float32 mean IEEE float32 on ``device``: cuDNN convolutions otherwise run in TF32 on Ampere and later
    GPUs (10-bit mantissa, ~1e-3 relative error), which would break the exactness the occlusion engines and the
    oracle tests rely on. Process-wide (torch has no per-model switch); a no-op off CUDA."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
