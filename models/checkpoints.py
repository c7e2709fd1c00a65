"""Safe loading of a user's weights for a listed architecture.

Only tensors are accepted: ``.safetensors``, or ``torch.load(weights_only=True)`` for ``.pt/.pth`` — never a
fallback to unsafe unpickling. TorchScript archives and pickled whole modules are refused with the reason.
"""
from __future__ import annotations

import functools
import io
import json
import pickle
import zipfile
from collections.abc import Mapping

import torch
from torch import nn

from .efficientnet_lite import efficientnet_lite0
from .handle import ModelHandle, Preprocess
from .zoo import ZOO, DISPLAY, preprocess_for
from .default import LITE_PREPROCESS

MAX_WEIGHTS_BYTES = 600 * 1024 * 1024  # VGG16 is 528 MB

ARCHITECTURES: dict[str, str] = {"efficientnet_lite0": "EfficientNet-Lite0", **DISPLAY}


class CheckpointError(ValueError):
    """The weights file cannot be used; str(e) says why in words a user can act on."""


def _architecture(arch: str, num_classes: int) -> nn.Module:
    if arch == "efficientnet_lite0":
        return efficientnet_lite0(num_classes=num_classes)
    if arch not in ZOO:
        raise CheckpointError(f"Unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}.")
    import torchvision.models as tvm

    kwargs = {"aux_logits": False, "init_weights": False} if arch == "googlenet" else {}
    return tvm.get_model_builder(ZOO[arch])(weights=None, num_classes=num_classes, **kwargs)


@functools.lru_cache(maxsize=None)
def classifier_key(arch: str) -> str:
    """The state-dict key of the final classifier weight (its first dimension is the class count)."""
    ref = _architecture(arch, 7).state_dict()
    keys = [k for k, v in ref.items() if k.endswith("weight") and v.shape and v.shape[0] == 7]
    return keys[-1]


def read_state_dict(data: bytes, filename: str = "") -> dict[str, torch.Tensor]:
    """Bytes of a weights file → a flat {name: tensor} dict, or CheckpointError."""
    if len(data) == 0:
        raise CheckpointError("The weights file is empty.")
    if len(data) > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"The weights file is {len(data) / 2**20:.0f} MB; at most "
                              f"{MAX_WEIGHTS_BYTES / 2**20:.0f} MB are accepted.")
    obj: object
    if _looks_like_safetensors(data):
        from safetensors.torch import load as st_load

        try:
            obj = st_load(data)
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise CheckpointError(f"The .safetensors file could not be read ({e}).") from None
    else:
        if zipfile.is_zipfile(io.BytesIO(data)):
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
            if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                raise CheckpointError("This is a TorchScript file (a compiled program, not plain weights). "
                                      "TorchScript contains executable code and is refused; save the weights "
                                      "with torch.save(model.state_dict(), 'weights.pt') instead.")
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            text = str(e)
            if "Unsupported global" in text or "GLOBAL" in text:
                raise CheckpointError(
                    "The file holds pickled Python objects, not just tensors (for example a whole saved "
                    "nn.Module, or something that would run code when loaded). Only weights are accepted: save "
                    "with torch.save(model.state_dict(), 'weights.pt') or use .safetensors.") from None
            raise CheckpointError("The file is not a PyTorch weights file (it could not be unpickled safely).") from None
        except Exception as e:  # noqa: BLE001 - random bytes raise many different errors
            raise CheckpointError(f"The file is not a PyTorch weights file ({type(e).__name__}). Accepted: "
                                  ".safetensors, or .pt/.pth holding a state dict.") from None
    return _flatten_state(obj)


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    n = int.from_bytes(data[:8], "little")
    return 2 <= n <= len(data) - 8 and data[8:9] == b"{"


def _flatten_state(obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model_state_dict", "model", "net"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError("The file does not hold a state dict (a mapping of parameter names to tensors).")
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"The state dict holds non-tensor entries: {', '.join(map(str, bad[:5]))}.")
    out = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in out):  # saved from DataParallel
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def read_labels(data: bytes | None, num_classes: int) -> list[str]:
    """Labels from a text file (one per line) or JSON (list, or {index: name}); default 'class i'."""
    if not data:
        return [f"class {i}" for i in range(num_classes)]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CheckpointError("The labels file is not UTF-8 text.") from None
    labels: list[str]
    stripped = text.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"The labels file looks like JSON but does not parse: {e}.") from None
        if isinstance(obj, dict):
            try:
                labels = [str(obj[k]) for k in sorted(obj, key=lambda k: int(k))]
            except (ValueError, TypeError):
                raise CheckpointError("A JSON labels object must map class indices to names.") from None
        elif isinstance(obj, list):
            labels = [str(v) for v in obj]
        else:
            raise CheckpointError("A JSON labels file must be a list of names or an {index: name} object.")
    else:
        labels = [line.strip() for line in stripped.splitlines() if line.strip()]
    if len(labels) != num_classes:
        raise CheckpointError(f"The labels file names {len(labels)} classes but the weights have {num_classes}.")
    return labels


def check_against(net: nn.Module, state: dict[str, torch.Tensor], arch_name: str) -> None:
    """Raise CheckpointError naming missing, unexpected and wrongly-shaped keys."""
    ref = net.state_dict()
    missing = [k for k in ref if k not in state]
    unexpected = [k for k in state if k not in ref]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(ref[k].shape)}"
              for k in ref if k in state and tuple(state[k].shape) != tuple(ref[k].shape)]
    if not (missing or unexpected or shapes):
        return
    has_conv = any(v.dim() == 4 for v in state.values())
    parts = [f"These weights do not fit {arch_name}."]
    if not has_conv:
        parts.append("The file contains no convolution weights at all (no 4-D tensors): it is not a CNN.")
    elif len(missing) > 0.5 * len(ref) and unexpected:
        parts.append("Most keys differ: the file was probably saved from another architecture.")

    def show(title: str, items: list[str]) -> None:
        if items:
            more = f" … and {len(items) - 8} more" if len(items) > 8 else ""
            parts.append(f"{title} ({len(items)}): " + "; ".join(items[:8]) + more)

    show("Missing keys", missing)
    show("Unexpected keys", unexpected)
    show("Wrong shapes", shapes)
    raise CheckpointError("\n".join(parts))


def load_user_model(arch: str, data: bytes, filename: str = "weights.pt", labels_data: bytes | None = None,
                    display_name: str | None = None) -> ModelHandle:
    """A handle for ``arch`` with the user's weights; classes counted from the classifier weight."""
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"Unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}.")
    state = read_state_dict(data, filename)
    ckey = classifier_key(arch)
    if ckey not in state or state[ckey].dim() < 1:
        net = _architecture(arch, 1000)
        check_against(net, state, ARCHITECTURES[arch])
        raise CheckpointError(f"The classifier weight {ckey!r} is missing, so the number of classes is unknown.")
    num_classes = int(state[ckey].shape[0])
    net = _architecture(arch, num_classes)
    check_against(net, state, ARCHITECTURES[arch])
    net.load_state_dict(state, strict=True)
    net.eval()
    labels = read_labels(labels_data, num_classes)
    pre: Preprocess = LITE_PREPROCESS if arch == "efficientnet_lite0" else preprocess_for(arch)
    name = display_name or f"{ARCHITECTURES[arch]} (your weights: {filename})"
    return ModelHandle(key=f"user:{arch}:{filename}", name=name, net=net, preprocess=pre, labels=labels,
                       source=f"uploaded file {filename}", family="user")
