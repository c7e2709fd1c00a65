"""Safe loading of a user's weights for any architecture of ``models.architectures`` (torchvision, timm, packaged).

Only tensors are accepted: ``.safetensors``, or ``torch.load(weights_only=True)`` for ``.pt/.pth/.ckpt`` — never
a fallback to unsafe unpickling. TorchScript archives and pickled whole modules are refused with the reason.

Checkpoint shapes people save are unwrapped: ``{"state_dict": …}`` (Lightning, with its ``model.``/``net.`` prefix
stripped when every key has it), ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes, timm's
``{"state_dict", "state_dict_ema", "optimizer", "args", …}`` (the EMA weights are offered as variant "ema"); other
entries (epoch, optimizer state, hyper-parameters) are ignored. Such checkpoints often pickle a few plain-data
classes beside the tensors (timm's ``argparse.Namespace``, Lightning's ``AttributeDict``, paths, numpy scalars).
``weights_only`` refuses those; the ones named in ``INERT_GLOBALS`` are then read as inert stand-ins of our own
(no code of theirs runs, their contents are dropped) after torch has listed every global the file needs
(``torch.serialization.get_unsafe_globals_in_checkpoint``, which reads the pickle without running it). Any other
global is refused, and named.

Memory is bounded by what the tensors will occupy once loaded, read before anything is materialised: from the
safetensors header (dtype × shape of every tensor, offsets checked against the file) and from the zip archive
that ``torch.save`` writes (the uncompressed size of every member, from its central directory; a deflated member
can inflate ~1000×). After loading, the logical size of every tensor is checked too (a stride-0 view can claim
any shape on a tiny storage). Bare pickles and PyTorch's legacy pre-1.6 format are refused: their storage sizes
are only known while unpickling, when torch has already allocated them.
"""
from __future__ import annotations

import io
import json
import math
import pickle
import re
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .architectures import (DISPLAY_NAMES, CheckpointError, build, classifier_key, default_preprocess,
                            drop_training_heads, meta_build, spec_for)
from .handle import ModelHandle, Preprocess

MAX_WEIGHTS_BYTES = 600 * 1024 * 1024  # the upload itself; VGG16 is 528 MB
# What the tensors may occupy in memory once loaded (the zoo's largest, VGG16, takes 528 MB). The one limit for
# every container: the sizes a file declares are checked against it before anything is decompressed or allocated.
MAX_LOADED_BYTES = 600 * 1024 * 1024
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024  # real headers take ~100 bytes per tensor
# bytes per element of every safetensors dtype
_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_ZIP_MAGIC = b"PK\x03\x04"  # torch.load takes the zip path only when the file starts with a local header

# {key: display name} of the packaged and torchvision CNNs (a lazy mapping: built on first use); any timm name
# is accepted too (models.architectures.timm_names lists them).
ARCHITECTURES = DISPLAY_NAMES
__all__ = ["ARCHITECTURES", "CheckpointError", "WeightsInfo", "check_against", "classifier_key", "inspect_weights",
           "load_user_model", "read_labels", "read_state_dict", "safetensors_layout"]

# wrapper keys of the weights in common checkpoint formats, most usual first
RAW_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights", "params")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema", "ema_model", "model_ema_state_dict")
PREFIXES = ("module.", "_orig_mod.", "model.", "net.")  # stripped when every key has one
VARIANT_NAMES = {"raw": "raw weights", "ema": "EMA weights (exponential moving average)"}


class _Inert:
    """Stand-in for a plain-data class pickled beside the weights: takes any arguments and state, keeps none."""

    def __new__(cls, *args: object, **kwargs: object) -> "_Inert":
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


class _InertDict:
    """Stand-in for a dict subclass (Lightning's AttributeDict): unpickles as a plain dict (torch's unpickler
    fills only real dicts), nothing of the original class."""

    def __new__(cls, *args: object, **kwargs: object) -> dict:  # type: ignore[misc]
        return {}


# Globals read as stand-ins: classes that only carry data in the checkpoints of timm, Lightning and numpy users.
INERT_GLOBALS: dict[str, type] = {
    "argparse.Namespace": _Inert,  # timm train.py's "args"
    **{f"{m}.AttributeDict": _InertDict for m in (
        "lightning.fabric.utilities.data", "lightning_fabric.utilities.data",
        "lightning.pytorch.utilities.parsing", "pytorch_lightning.utilities.parsing")},
    **{f"{m}.{c}": _Inert for m in ("pathlib", "pathlib._local")
       for c in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")},
    **{f"{m}.{c}": _Inert for m in ("numpy.core.multiarray", "numpy._core.multiarray")
       for c in ("scalar", "_reconstruct")},
    "numpy.dtype": _Inert, "numpy.ndarray": _Inert,
}
_INERT_LOCK = threading.Lock()  # torch's allow-list is process-wide: one stand-in load at a time


def _inert(name: str) -> type | None:
    if name in INERT_GLOBALS:
        return INERT_GLOBALS[name]
    return _Inert if re.fullmatch(r"numpy\.dtypes\.\w+DType", name) else None


def _mb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _too_big(n: int, what: str) -> CheckpointError:
    return CheckpointError(f"{what} would occupy {_mb(n)} of memory once loaded; at most {_mb(MAX_LOADED_BYTES)} "
                           "are accepted (the largest listed architecture, VGG16, needs 528 MB).")


def _read_container(data: bytes, filename: str) -> object:
    """Bytes of a weights file → the unpickled object (a mapping, for a good file), or CheckpointError.

    The container is decided by the content (a .safetensors name only decides how a file that fits no format is
    described): a zip archive → ``torch.load(weights_only=True)``; a safetensors header → safetensors."""
    if len(data) == 0:
        raise CheckpointError("The weights file is empty.")
    if len(data) > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"The weights file is {len(data) / 2**20:.0f} MB; at most "
                              f"{MAX_WEIGHTS_BYTES / 2**20:.0f} MB are accepted.")
    if data[:4] == _ZIP_MAGIC:
        return _read_torch_zip(data)
    if _looks_like_safetensors(data) or filename.lower().endswith(".safetensors"):
        return _read_safetensors(data)
    if data[:1] == b"\x80":  # a pickle (protocol 2+): PyTorch's legacy format, or a bare pickle
        raise CheckpointError(
            "The file is not a PyTorch weights file in the current format: it is a bare Python pickle or a .pt "
            "file in PyTorch's legacy (pre-1.6) format. Neither can be checked before loading (they could run "
            "code or allocate any amount of memory), so they are refused. "
            "Re-save the weights with a current PyTorch, torch.save(model.state_dict(), 'weights.pt'), or use "
            ".safetensors.")
    raise CheckpointError("The file is not a PyTorch weights file. Accepted: .safetensors, or .pt/.pth "
                          "holding a state dict (as written by torch.save).")


def _variants(data: bytes, filename: str) -> tuple[dict[str, dict[str, torch.Tensor]], tuple[str, ...]]:
    """({variant: flat state dict}, names of the entries ignored) of a weights file, every variant checked
    against the memory limit."""
    variants, ignored = _unwrap(_read_container(data, filename))
    for state in variants.values():
        loaded = sum(t.numel() * t.element_size() for t in state.values())
        if loaded > MAX_LOADED_BYTES:
            raise _too_big(loaded, "The tensors of this file")
    return variants, ignored


def read_state_dict(data: bytes, filename: str = "", variant: str = "raw") -> dict[str, torch.Tensor]:
    """Bytes of a weights file → a flat {name: tensor} dict, or CheckpointError.

    ``variant`` picks the weights of a checkpoint that holds several: "raw" (the trained weights) or "ema"
    (timm's ``state_dict_ema`` and the like); :func:`inspect_weights` says which a file has."""
    variants, _ = _variants(data, filename)
    if variant not in variants:
        have = " and ".join(f"{v!r} ({VARIANT_NAMES.get(v, v)})" for v in variants)
        raise CheckpointError(f"The file holds no {VARIANT_NAMES.get(variant, repr(variant))}; it has {have}.")
    return variants[variant]


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file holds, read before an architecture is chosen."""

    variants: tuple[str, ...]  # ("raw",) or ("raw", "ema")
    num_tensors: int
    loaded_bytes: int
    num_classes: int | None  # a guess from the last classifier-like weight; None when there is none
    has_nonfinite: bool
    classifier: str | None = None  # the weight the guess was read from
    nonfinite: tuple[str, ...] = ()  # tensors holding NaN or ±inf
    ignored: tuple[str, ...] = ()  # checkpoint entries that are not weights (epoch, optimizer state, …)
    not_a_cnn: str = ""  # why the file looks like a network without sliding convolutions ('' when it does not)


def inspect_weights(data: bytes, filename: str = "") -> WeightsInfo:
    """The variants, size, class-count guess and health of a weights file (of its first variant, "raw" when
    present), or CheckpointError for a file that cannot be read."""
    variants, ignored = _variants(data, filename)
    state = next(iter(variants.values()))
    cls = guess_classifier(state)
    bad = nonfinite_tensors(state)
    return WeightsInfo(variants=tuple(variants), num_tensors=len(state),
                       loaded_bytes=sum(t.numel() * t.element_size() for t in state.values()),
                       num_classes=int(state[cls].shape[0]) if cls else None, has_nonfinite=bool(bad),
                       classifier=cls, nonfinite=tuple(k for k, _, _ in bad), ignored=ignored,
                       not_a_cnn=_not_a_cnn(state))


_CLASSIFIER_NAME = re.compile(r"(^|\.)(fc|classifier|head|last_linear|_fc|logits|linear|fc8|out)(\.\d+)?\.weight$")


def guess_classifier(state: Mapping[str, torch.Tensor]) -> str | None:
    """The key of the weight that most likely is the classifier: a 2-D weight (or a 1×1 convolution) with a
    bias of as many entries, preferring classifier-like names and the shallowest path, then the last such key
    (safetensors files come sorted by name, so order alone cannot be trusted)."""
    cands = []
    for i, (k, v) in enumerate(state.items()):
        if not k.endswith("weight") or not (v.dim() == 2 or (v.dim() == 4 and v.shape[2:] == (1, 1))):
            continue
        bias = state.get(k[: -len("weight")] + "bias")
        if bias is None or bias.dim() != 1 or bias.shape[0] != v.shape[0]:
            continue
        cands.append((bool(_CLASSIFIER_NAME.search(k)), v.dim() == 2, -k.count("."), i, k))
    return max(cands)[-1] if cands else None


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[tuple[str, int, int]]:
    """(name, NaN count, ±inf count) of every floating-point tensor holding NaN or infinity."""
    out = []
    for k, v in state.items():
        if v.is_floating_point() or v.is_complex():
            nan = int(torch.isnan(v).sum())
            inf = int(torch.isinf(v).sum())
            if nan or inf:
                out.append((k, nan, inf))
    return out


_ATTENTION = re.compile(r"(^|\.)(attn|attention|self_attention|self_attn)\.|(^|\.)(cls_token|class_token|pos_embed|"
                        r"pos_embedding|relative_position_bias_table|in_proj_weight)$")
_PATCH = re.compile(r"patch_embed|conv_proj|patch_embedding|stem\.proj|to_patch")


def _not_a_cnn(state: Mapping[str, torch.Tensor]) -> str:
    """Why the file looks like a transformer or MLP on patches: at most one convolution with a window larger than
    1×1, a patch embedding by name or the first layer of a network with attention. '' otherwise. (A file does not
    say its strides, so this only explains a mismatch; the architectures themselves are judged by
    models.architectures.conv_verdict.)"""
    four = [k for k, v in state.items() if v.dim() == 4 and k.endswith("weight")]
    if not four:
        return ("The file contains no convolution weights at all (no 4-D tensors): it is not a CNN. CNN Lens "
                "explains convolutional networks.")
    spatial = [k for k in four if tuple(state[k].shape[2:]) != (1, 1)]
    attn = [k for k in state if _ATTENTION.search(k)]
    if len(spatial) != 1 or not (_PATCH.search(spatial[0]) or attn):
        return ""
    k = spatial[0]
    kh, kw = state[k].shape[2:]
    kind = "a vision transformer" if attn else "an MLP network on image patches (MLP-Mixer style)"
    extra = f" and it has attention weights ({attn[0]}, …)" if attn else ""
    return (f"This file holds {kind}, not a CNN: its only convolution, {k} ({kh}×{kw} kernel), is a patch "
            f"embedding that cuts the image into patches{extra}. CNN Lens refuses networks without sliding "
            "convolutions, since filters, receptive fields, CAM and top patches are defined on convolution layers; "
            "convolutional hybrids (e.g. timm's coatnet, maxvit, levit) are accepted.")


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
        if not ("Unsupported global" in text or "GLOBAL" in text):
            raise CheckpointError("The file is not a PyTorch weights file (it could not be unpickled safely).") \
                from None
    except Exception as e:  # noqa: BLE001 - damaged archives raise many different errors
        raise _unreadable(e) from None
    return _load_with_stand_ins(data)


def _unreadable(e: Exception) -> CheckpointError:
    return CheckpointError(f"The file is not a readable PyTorch weights file ({type(e).__name__}). Accepted: "
                           ".safetensors, or .pt/.pth/.ckpt holding a state dict.")


def _load_with_stand_ins(data: bytes) -> object:
    """A weights-only load of a checkpoint that also pickles plain-data classes: every global it needs is listed
    first (without running the pickle); if each is one of INERT_GLOBALS it is read as an inert stand-in, else
    the file is refused naming them."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - a pickle too damaged to scan
        names = []
    unknown = [n for n in names if _inert(n) is None]
    if names and not unknown:
        allow = [(_inert(n), n) for n in names]
        try:
            with _INERT_LOCK, torch.serialization.safe_globals(allow):
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            unknown = names
        except Exception as e:  # noqa: BLE001
            raise _unreadable(e) from None
    module = [n for n in unknown if n.startswith(("torch.nn.modules.", "torchvision.models.", "timm.models."))]
    what = (f"a whole saved nn.Module ({', '.join(module[:3])})" if module else
            "Python objects that are not weights" + (f" ({', '.join(unknown[:5])}"
                                                     f"{', …' if len(unknown) > 5 else ''})" if unknown else ""))
    raise CheckpointError(
        f"The file holds pickled Python objects, not just tensors: {what}. Loading them could run code, so "
        "the file is refused (for example a whole saved nn.Module, or something that would run code when "
        "loaded). Only weights are accepted: in the code that built the model, save them with "
        "torch.save(model.state_dict(), 'weights.pt') or export .safetensors "
        "(safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')).") from None


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


def _tensor_map(v: object) -> bool:
    return isinstance(v, Mapping) and bool(v) and all(torch.is_tensor(x) for x in v.values())


def _unwrap(obj: object) -> tuple[dict[str, dict[str, torch.Tensor]], tuple[str, ...]]:
    """The weights inside a checkpoint: ({"raw": …, "ema": …} as present, names of the entries ignored)."""
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError("The file does not hold a state dict (a mapping of parameter names to tensors).")
    if all(torch.is_tensor(v) for v in obj.values()):
        return {"raw": _strip(obj)}, ()
    variants: dict[str, dict[str, torch.Tensor]] = {}
    used: list[str] = []
    for variant, names in (("raw", RAW_KEYS), ("ema", EMA_KEYS)):
        for name in names:
            inner = obj.get(name)
            if isinstance(inner, Mapping) and inner:
                bad = [str(k) for k, v in inner.items() if not torch.is_tensor(v)]
                if bad and not any(torch.is_tensor(v) for v in inner.values()):
                    continue  # e.g. a "model" entry holding a config
                if bad:
                    raise CheckpointError(f"The checkpoint's {name!r} entry holds non-tensor entries: "
                                          f"{', '.join(bad[:5])}.")
                variants[variant] = _strip(inner)
                used.append(name)
                break
    if not variants:
        tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
        nested = [k for k, v in obj.items() if _tensor_map(v)]
        if tensors:
            variants["raw"] = _strip(tensors)
            used.extend(tensors)
        elif len(nested) == 1:
            variants["raw"] = _strip(obj[nested[0]])
            used.append(nested[0])
        else:
            found = f" (entries: {', '.join(map(str, list(obj)[:8]))})"
            raise CheckpointError("The file does not hold a state dict (a mapping of parameter names to tensors)"
                                  f"{found}.")
    if "raw" in variants:
        variants = {"raw": variants["raw"], **{k: v for k, v in variants.items() if k != "raw"}}
    return variants, tuple(str(k) for k in obj if k not in used)


def _strip(state: Mapping) -> dict[str, torch.Tensor]:
    """String keys, with the wrapper prefixes that every key shares removed (DataParallel's ``module.``,
    torch.compile's ``_orig_mod.``, Lightning's ``model.``/``net.``), repeatedly."""
    out = {str(k): v for k, v in state.items()}
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if all(k.startswith(p) and len(k) > len(p) for k in out):
                out = {k[len(p):]: v for k, v in out.items()}
                changed = True
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
    """Raise CheckpointError naming missing, unexpected and wrongly-shaped keys (``net`` may live on ``meta``).
    A missing ``num_batches_tracked`` is not counted: files exported elsewhere often drop it; it is filled in."""
    ref = net.state_dict()
    missing = [k for k in ref if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in ref]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(ref[k].shape)}"
              for k in ref if k in state and tuple(state[k].shape) != tuple(ref[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = [f"These weights do not fit {arch_name}."]
    why = _not_a_cnn(state)
    if why:
        parts.append(why)
    elif len(missing) > 0.5 * len(ref) and unexpected:
        parts.append("Most keys differ: the file was probably saved from another architecture (the "
                     "\"Which architecture is this?\" search finds the ones that fit).")

    def show(title: str, items: list[str]) -> None:
        if items:
            more = f" … and {len(items) - 8} more" if len(items) > 8 else ""
            parts.append(f"{title} ({len(items)}): " + "; ".join(items[:8]) + more)

    show("Missing keys", missing)
    show("Unexpected keys", unexpected)
    show("Wrong shapes", shapes)
    raise CheckpointError("\n".join(parts))


def _fill_batch_counts(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state with the ``num_batches_tracked`` counters it lacks set to 0 (so a strict load accepts it)."""
    missing = {k: torch.zeros((), dtype=torch.long) for k in net.state_dict()
               if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **missing} if missing else state


def load_user_model(arch: str, data: bytes, filename: str = "weights.pt", labels_data: bytes | None = None, *,
                    variant: str = "raw", preprocess: Preprocess | None = None,
                    display_name: str | None = None) -> ModelHandle:
    """A handle for ``arch`` (any key ``models.architectures.spec_for`` accepts: "resnet18", "timm:convnext_tiny",
    "efficientnet_lite0") with the user's weights (``variant`` "raw" or "ema"); classes counted from the
    classifier weight; ``preprocess`` replaces the architecture's default preprocessing."""
    spec = spec_for(arch)
    state = drop_training_heads(spec.key, read_state_dict(data, filename, variant))
    ckey = classifier_key(spec.key)
    if ckey not in state or state[ckey].dim() < 1:
        check_against(meta_build(spec.key, 1000), state, spec.display)
        raise CheckpointError(f"The classifier weight {ckey!r} is missing, so the number of classes is unknown.")
    num_classes = int(state[ckey].shape[0])
    if num_classes < 1:
        raise CheckpointError(f"The classifier weight {ckey!r} has shape {tuple(state[ckey].shape)}: the network "
                              "would have no output classes. A classifier needs at least one.")
    check_against(meta_build(spec.key, num_classes), state, spec.display)  # shapes first, nothing allocated
    bad = nonfinite_tensors(state)
    if bad:
        listed = "; ".join(f"{k} ({', '.join(p for p in (f'{n} NaN' if n else '', f'{i} inf' if i else '') if p)})"
                           for k, n, i in bad[:8]) + (f" … and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise CheckpointError(f"The keys fit {spec.display}, but {len(bad)} tensor{'s' if len(bad) > 1 else ''} "
                              f"hold NaN or infinite values: {listed}. The network would output NaN; export the "
                              "weights from a checkpoint before training diverged.")
    labels = read_labels(labels_data, num_classes)
    net = build(spec.key, num_classes)
    net.load_state_dict(_fill_batch_counts(net, state), strict=True)
    net.eval()
    pre = preprocess if preprocess is not None else default_preprocess(spec.key)
    tag = ", EMA" if variant == "ema" else ""
    name = display_name or f"{spec.display} (your weights: {filename}{tag})"
    return ModelHandle(key=f"user:{spec.key}:{filename}" + (f":{variant}" if variant != "raw" else ""), name=name,
                       net=net, preprocess=pre, labels=labels,
                       source=f"uploaded file {filename}" + (f" ({variant} weights)" if variant != "raw" else ""),
                       family="user")
