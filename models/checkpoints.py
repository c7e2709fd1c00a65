"""Safe loading of a user's weights for a listed architecture.

Only tensors are accepted: ``.safetensors``, or ``torch.load(weights_only=True)`` for ``.pt/.pth`` — never a
fallback to unsafe unpickling. TorchScript archives and pickled whole modules are refused with the reason.

Memory is bounded by what the tensors will occupy once loaded, read before anything is materialised: from the
safetensors header (dtype × shape of every tensor, offsets checked against the file) and from the zip archive
that ``torch.save`` writes (the uncompressed size of every member, from its central directory; a deflated member
can inflate ~1000×). After loading, the logical size of every tensor is checked too (a stride-0 view can claim
any shape on a tiny storage). Bare pickles and PyTorch's legacy pre-1.6 format are refused: their storage sizes
are only known while unpickling, when torch has already allocated them.
"""
from __future__ import annotations

import functools
import io
import json
import math
import pickle
import zipfile
from collections.abc import Mapping

import torch
from torch import nn

from .efficientnet_lite import efficientnet_lite0
from .handle import ModelHandle, Preprocess
from .zoo import ZOO, DISPLAY, preprocess_for
from .default import LITE_PREPROCESS

MAX_WEIGHTS_BYTES = 600 * 1024 * 1024  # the upload itself; VGG16 is 528 MB
# What the tensors may occupy in memory once loaded (the zoo's largest, VGG16, takes 528 MB). The one limit for
# every container: the sizes a file declares are checked against it before anything is decompressed or allocated.
MAX_LOADED_BYTES = 600 * 1024 * 1024
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024  # real headers take ~100 bytes per tensor
# bytes per element of every safetensors dtype
_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_ZIP_MAGIC = b"PK\x03\x04"  # torch.load takes the zip path only when the file starts with a local header

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


def _mb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _too_big(n: int, what: str) -> CheckpointError:
    return CheckpointError(f"{what} would occupy {_mb(n)} of memory once loaded; at most {_mb(MAX_LOADED_BYTES)} "
                           "are accepted (the largest listed architecture, VGG16, needs 528 MB).")


def read_state_dict(data: bytes, filename: str = "") -> dict[str, torch.Tensor]:
    """Bytes of a weights file → a flat {name: tensor} dict, or CheckpointError.

    The container is decided by the content (a .safetensors name only decides how a file that fits no format is
    described): a zip archive → ``torch.load(weights_only=True)``; a safetensors header → safetensors."""
    if len(data) == 0:
        raise CheckpointError("The weights file is empty.")
    if len(data) > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"The weights file is {len(data) / 2**20:.0f} MB; at most "
                              f"{MAX_WEIGHTS_BYTES / 2**20:.0f} MB are accepted.")
    obj: object
    if data[:4] == _ZIP_MAGIC:
        obj = _read_torch_zip(data)
    elif _looks_like_safetensors(data) or filename.lower().endswith(".safetensors"):
        obj = _read_safetensors(data)
    elif data[:1] == b"\x80":  # a pickle (protocol 2+): PyTorch's legacy format, or a bare pickle
        raise CheckpointError(
            "The file is not a PyTorch weights file in the current format: it is a bare Python pickle or a .pt "
            "file in PyTorch's legacy (pre-1.6) format. Neither can be checked before loading (they could run "
            "code or allocate any amount of memory), so they are refused. "
            "Re-save the weights with a current PyTorch, torch.save(model.state_dict(), 'weights.pt'), or use "
            ".safetensors.")
    else:
        raise CheckpointError("The file is not a PyTorch weights file. Accepted: .safetensors, or .pt/.pth "
                              "holding a state dict (as written by torch.save).")
    state = _flatten_state(obj)
    loaded = sum(t.numel() * t.element_size() for t in state.values())
    if loaded > MAX_LOADED_BYTES:
        raise _too_big(loaded, "The tensors of this file")
    return state


def _read_torch_zip(data: bytes) -> object:
    """A ``torch.save`` zip archive: TorchScript refused, uncompressed sizes bounded, then a weights-only load."""
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"The file is a damaged zip archive, so not a readable .pt file ({e}).") from None
    names = [i.filename for i in infos]
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise CheckpointError("This is a TorchScript file (a compiled program, not plain weights). "
                              "TorchScript contains executable code and is refused; save the weights "
                              "with torch.save(model.state_dict(), 'weights.pt') instead.")
    # torch reads each member whole into memory, at the size the central directory declares
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_LOADED_BYTES:
        raise _too_big(unpacked, "The archive's members (unpacked)")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                "The file holds pickled Python objects, not just tensors (for example a whole saved "
                "nn.Module, or something that would run code when loaded). Only weights are accepted: save "
                "with torch.save(model.state_dict(), 'weights.pt') or use .safetensors.") from None
        raise CheckpointError("The file is not a PyTorch weights file (it could not be unpickled safely).") from None
    except Exception as e:  # noqa: BLE001 - damaged archives raise many different errors
        raise CheckpointError(f"The file is not a readable PyTorch weights file ({type(e).__name__}). Accepted: "
                              ".safetensors, or .pt/.pth holding a state dict.") from None


def _damaged(why: str) -> CheckpointError:
    return CheckpointError(f"This is a damaged .safetensors file: {why}. Export it again, e.g. with "
                           "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors').")


def safetensors_layout(data: bytes) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """The header of a safetensors file, checked: {name: (dtype, shape, begin, end)} with offsets into the data
    section. Raises CheckpointError naming the damage, or the memory limit when the declared tensors exceed it
    (checked before the offsets, so a tiny file declaring gigabytes is told so)."""
    if len(data) < 8:
        raise _damaged("it is too short to hold the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise _damaged(f"its header length says {n} bytes but only {len(data) - 8} follow")
    if n > MAX_SAFETENSORS_HEADER:
        raise _damaged(f"its header claims {_mb(n)}, far more than any tensor list needs")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _damaged(f"its header is not valid JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise _damaged("its header is not a JSON object")
    layout: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    declared = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offs = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (_int_list(shape) and all(d >= 0 for d in shape) and _int_list(offs) and len(offs) == 2):
            raise _damaged(f"tensor {name!r} has no valid shape or data offsets")
        dtype = entry.get("dtype")
        if dtype not in _ST_DTYPES:
            raise _damaged(f"tensor {name!r} has an unknown dtype {dtype!r}")
        declared += math.prod(shape) * _ST_DTYPES[dtype]
        layout[str(name)] = (dtype, tuple(shape), offs[0], offs[1])
    if declared > MAX_LOADED_BYTES:
        raise _too_big(declared, "The tensors its header declares")
    body, end = len(data) - 8 - n, 0
    for name, (dtype, shape, begin, stop) in sorted(layout.items(), key=lambda kv: kv[1][2:]):
        size = math.prod(shape) * _ST_DTYPES[dtype]
        if stop - begin != size:
            raise _damaged(f"tensor {name!r} ({dtype} {list(shape)}: {size} bytes) has data offsets "
                           f"[{begin}, {stop}] that do not match its size")
        if begin != end:
            raise _damaged(f"the data of tensor {name!r} starts at byte {begin}, not where the previous one ends "
                           f"({end}): overlapping or missing data")
        end = stop
    if end > body:
        raise _damaged(f"the tensors need {end} bytes of data but the file holds {body} (truncated)")
    if end < body:
        raise _damaged(f"{body - end} stray bytes follow the last tensor's data")
    return layout


def _int_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in v)


def _read_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    safetensors_layout(data)
    from safetensors.torch import load as st_load

    try:
        return st_load(data)
    except Exception as e:  # noqa: BLE001 - whatever the library still finds wrong is damage too
        raise _damaged(str(e) or type(e).__name__) from None


def _looks_like_safetensors(data: bytes) -> bool:
    """An 8-byte little-endian header length that fits the file, followed by a JSON object."""
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
    if num_classes < 1:
        raise CheckpointError(f"The classifier weight {ckey!r} has shape {tuple(state[ckey].shape)}: the network "
                              "would have no output classes. A classifier needs at least one.")
    net = _architecture(arch, num_classes)
    check_against(net, state, ARCHITECTURES[arch])
    net.load_state_dict(state, strict=True)
    net.eval()
    labels = read_labels(labels_data, num_classes)
    pre: Preprocess = LITE_PREPROCESS if arch == "efficientnet_lite0" else preprocess_for(arch)
    name = display_name or f"{ARCHITECTURES[arch]} (your weights: {filename})"
    return ModelHandle(key=f"user:{arch}:{filename}", name=name, net=net, preprocess=pre, labels=labels,
                       source=f"uploaded file {filename}", family="user")
