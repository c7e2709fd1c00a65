"""Every classification CNN a user's weights may be for: torchvision's builders, timm's models and the packaged
EfficientNet-Lite, each named by a key (``resnet18``, ``timm:convnext_tiny``, ``efficientnet_lite0``).

Networks without sliding convolutions (ViT, Swin, MLP-Mixer, …) are left out, decided from the built network by
:func:`conv_verdict`. The decisions, each architecture's state-dict key names and its classifier key are stored
in ``arch_index.json`` (written by ``python -m models.finder --build-index``, stamped with the timm and
torchvision versions), because building all ~1450 networks takes minutes; when the installed versions differ
from the stamp, everything is decided by building instead (on the ``meta`` device: shapes only, no memory).
"""
from __future__ import annotations

import difflib
import functools
import importlib.metadata
import json
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
import torchvision.models as tvm
from torch import nn
from torch.overrides import TorchFunctionMode

from . import efficientnet_lite as lite
from . import default as lite_default
from .default import LITE_PREPROCESS
from .handle import Preprocess
from .zoo import DISPLAY, ZOO

INDEX_PATH = Path(__file__).with_name("arch_index.json")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SOURCES = ("packaged", "torchvision", "timm")
TIMM_PREFIX = "timm:"
# torchvision builders whose training-only heads are switched off (and whose init would be slow)
_TV_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False},
              "inception_v3": {"aux_logits": False, "init_weights": False}}
# training-only heads a file may still carry; those architectures are built without them
TRAINING_HEADS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


class CheckpointError(ValueError):
    """The weights file or the architecture cannot be used; str(e) says why in words a user can act on."""


@dataclass(frozen=True)
class ArchSpec:
    """One buildable architecture: its key (what :func:`build` takes), a display name and where it comes from."""

    key: str
    display: str
    source: str  # "torchvision" | "timm" | "packaged"

    @property
    def name(self) -> str:
        """The builder's own name (the key without ``timm:``)."""
        return self.key[len(TIMM_PREFIX):] if self.source == "timm" else self.key


def drop_training_heads(key: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state without the training-only heads of ``key`` (GoogLeNet's and Inception-v3's auxiliary
    classifiers), which the built architecture does not have."""
    heads = TRAINING_HEADS.get(key, ())
    return {k: v for k, v in state.items() if not (heads and k.startswith(heads))}


# ---- is it a CNN? -------------------------------------------------------------------------------------------

def conv_verdict(net: nn.Module) -> tuple[bool, str]:
    """(is a CNN, reason if not), decided from the built network.

    A network counts as a CNN when at least one of its 2-D convolutions *slides*: its kernel is larger than its
    stride along some axis, so neighbouring outputs share input pixels. A patchify stem (kernel = stride, as in
    ViT's 16×16/16 or Swin's 4×4/4) and 1×1 convolutions map each patch or position on its own, like the linear
    layers of a transformer or an MLP-Mixer; a network made only of those has nothing for filters, receptive
    fields or CAM to look at, and is refused. Convolutional hybrids (CoAtNet, MaxViT, LeViT, a ViT on a ResNet
    stem) have sliding convolutions and count as CNNs.
    """
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    for _, m in convs:
        if any(k > s for k, s in zip(m.kernel_size, m.stride)):
            return True, ""
    attn = [n for n, m in net.named_modules()
            if isinstance(m, nn.MultiheadAttention) or type(m).__name__.lower().endswith(("attention", "attn"))]
    kind = "a vision transformer" if attn else "an MLP network on image patches"
    why = [f"it is {kind}, not a CNN"]
    patch = [f"{n} ({m.kernel_size[0]}×{m.kernel_size[1]} kernel, stride {m.stride[0]})" for n, m in convs
             if tuple(m.kernel_size) != (1, 1)]
    if patch:
        why.append(f"its only convolution{'s' if len(patch) > 1 else ''} with a window larger than one pixel, "
                   f"{', '.join(patch[:3])}, cut{'s' if len(patch) == 1 else ''} the image into non-overlapping "
                   "patches (kernel = stride)")
    elif not convs:
        why.append("it has no 2-D convolutions at all")
    else:
        why.append("its 2-D convolutions are all 1×1")
    if attn:
        why.append(f"the rest is attention ({attn[0]}, …) and linear layers")
    why.append("CNN Lens refuses networks without sliding convolutions, since filters, receptive fields, CAM "
               "and top patches are defined on convolution layers (convolutional hybrids such as CoAtNet, "
               "MaxViT or LeViT are accepted)")
    return False, "; ".join(why) + "."


# ---- the stored index ---------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    """The library versions an index is valid for (public version numbers, without local tags like +cu130)."""
    try:
        timm_version = importlib.metadata.version("timm").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        timm_version = ""
    return {"timm": timm_version, "torchvision": torchvision.__version__.split("+")[0]}


@functools.lru_cache(maxsize=1)
def stored_index() -> dict | None:
    """The shipped index {key: {"sig", "cls", "cnn", "why"}} when it was made with the installed versions."""
    try:
        data = json.loads(INDEX_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("versions") != versions():
        return None
    return data.get("archs")


# ---- builders -----------------------------------------------------------------------------------------------

_timm_mod = None
_timm_lock = threading.Lock()


def _timm():
    """timm, imported on first use (it takes a second or two and most sessions never need it)."""
    global _timm_mod
    if _timm_mod is None:
        with _timm_lock:
            try:
                import timm
            except ImportError:
                raise CheckpointError("timm architectures need the package timm, which is not installed on this "
                                      "server: pip install 'timm>=1.0,<2'.") from None
            _timm_mod = timm
    return _timm_mod


def _lite_variants() -> dict[str, str]:
    """{key: display} of the packaged EfficientNet-Lite variants (``efficientnet_lite.LITE_VARIANTS`` where the
    module has it, else Lite0 alone)."""
    variants = getattr(lite, "LITE_VARIANTS", None)
    if variants:
        return {k: getattr(v, "display", None) or _lite_display(k) for k, v in variants.items()}
    return {"efficientnet_lite0": "EfficientNet-Lite0"}


def _lite_display(key: str) -> str:
    return "EfficientNet-Lite" + key.rsplit("lite", 1)[-1]


def _raw_build(spec: ArchSpec, num_classes: int) -> nn.Module:
    if spec.source == "packaged":
        if hasattr(lite, "efficientnet_lite") and hasattr(lite, "LITE_VARIANTS"):
            return lite.efficientnet_lite(spec.key, num_classes=num_classes)
        return lite.efficientnet_lite0(num_classes=num_classes)
    if spec.source == "torchvision":
        fn = tvm.get_model_builder(spec.name)
        return fn(weights=None, num_classes=num_classes, **_TV_KWARGS.get(spec.name, {}))
    return _timm().create_model(spec.name, pretrained=False, num_classes=num_classes)


def _check_classes(num_classes: int) -> None:
    if int(num_classes) < 1:
        raise CheckpointError(f"A classifier needs at least one output class; {num_classes} were asked for.")


def build(key: str, num_classes: int) -> nn.Module:
    """The architecture ``key`` (anything :func:`spec_for` accepts) with random weights, in eval mode."""
    _check_classes(num_classes)
    spec = spec_for(key)
    return _raw_build(spec, int(num_classes)).eval()


def meta_build(key: str, num_classes: int) -> nn.Module:
    """The architecture on the ``meta`` device: every parameter's shape, no memory, no initialisation.

    A builder that computes with tensor values while it builds (torchvision's RegNets) cannot run wholly on
    ``meta``: it is built with only its large tensors there (:class:`_LargeOnMeta`), and on the CPU if even that
    fails (no builder of torchvision 0.29 / timm 1.0.31 needs this)."""
    _check_classes(num_classes)
    spec = _spec_unchecked(key)
    return _meta(spec, int(num_classes))


def _meta(spec: ArchSpec, num_classes: int) -> nn.Module:
    try:
        with torch.device("meta"):
            return _raw_build(spec, num_classes)
    except (NotImplementedError, RuntimeError):
        pass
    try:
        with _LargeOnMeta():
            return _raw_build(spec, num_classes)
    except (NotImplementedError, RuntimeError):
        return _raw_build(spec, num_classes)


class _LargeOnMeta(TorchFunctionMode):
    """Puts tensors of 4096 elements or more made by ``empty/zeros/ones/full/rand/randn`` on ``meta`` (where
    every parameter of a large layer is made) and leaves small ones and computed values on the CPU, so that a
    builder that reads tensor values (RegNet's block widths) still runs. Like every torch function mode, it acts
    only in the thread that entered it."""

    _FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self._FACTORIES and kwargs.get("device") is None and args:
            size = args[0] if isinstance(args[0], (tuple, list, torch.Size)) else [
                a for a in (args[:-1] if func is torch.full else args) if isinstance(a, int)]
            if all(isinstance(d, int) for d in size) and math.prod(size) >= 4096:
                kwargs["device"] = "meta"
        return func(*args, **kwargs)


# ---- the catalog ----------------------------------------------------------------------------------------------

def _tv_display(name: str) -> str:
    return DISPLAY.get(name, f"{name} (torchvision)")


@functools.lru_cache(maxsize=1)
def _tv_decisions() -> dict[str, tuple[bool, str]]:
    """{torchvision builder: (is a CNN, why not)} from the index, else from building each on ``meta``."""
    idx = stored_index()
    out: dict[str, tuple[bool, str]] = {}
    for name in tvm.list_models(module=tvm):
        entry = idx.get(name) if idx else None
        if entry is not None:
            out[name] = (bool(entry["cnn"]), entry.get("why", ""))
        else:
            out[name] = conv_verdict(_meta(ArchSpec(name, name, "torchvision"), 7))
    return out


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, ArchSpec]:
    """The packaged and torchvision CNNs, keyed by their key: packaged first, then the zoo's eight, then the rest
    alphabetically. timm's are too many to list here: see :func:`timm_names`."""
    out = {k: ArchSpec(k, d, "packaged") for k, d in _lite_variants().items()}
    decided = _tv_decisions()
    for name in [*ZOO.values(), *sorted(decided)]:
        if decided.get(name, (False, ""))[0] and name not in out:
            out[name] = ArchSpec(name, _tv_display(name), "torchvision")
    return out


@functools.lru_cache(maxsize=1)
def timm_names() -> list[str]:
    """timm's CNN architecture names (no pretrained tags), sorted, for a picker; every name when the index is
    stale (the non-CNNs among them are then refused when chosen)."""
    idx = stored_index()
    names = _timm().list_models()
    if idx is None:
        return sorted(names)
    return sorted(n for n in names if idx.get(TIMM_PREFIX + n, {}).get("cnn", True))


class _DisplayNames(Mapping):
    """{key: display name} of the catalog, computed on first use (importing this module builds nothing)."""

    def __getitem__(self, key: str) -> str:
        return catalog()[key].display

    def __iter__(self) -> Iterator[str]:
        return iter(catalog())

    def __len__(self) -> int:
        return len(catalog())


DISPLAY_NAMES: Mapping[str, str] = _DisplayNames()


# ---- names → specs --------------------------------------------------------------------------------------------

def _pretrained_cfg(name: str):
    """timm's pretrained config for a name (with or without a tag), from its registry: nothing is downloaded."""
    try:
        return _timm().get_pretrained_cfg(name)
    except (RuntimeError, ValueError, KeyError):
        return None


def _timm_spec(name: str) -> ArchSpec | None:
    timm = _timm()
    if not name or not timm.is_model(name):
        return None
    arch, _, tag = name.partition(".")
    if tag and _pretrained_cfg(name) is None:
        tags = [t.partition(".")[2] for t in timm.list_pretrained(arch + ".*")]
        close = difflib.get_close_matches(tag, tags, n=5, cutoff=0.3) or tags[:5]
        raise CheckpointError(f"timm's {arch} has no pretrained tag {tag!r}"
                              + (f"; its tags include: {', '.join(close)}." if close else ".")
                              + f" Use {arch!r} alone for the architecture with its default preprocessing.")
    return ArchSpec(TIMM_PREFIX + name, f"{name} (timm)", "timm")


def _spec_unchecked(key: str) -> ArchSpec:
    """The spec for a key, not yet checked to be a CNN."""
    text = str(key).strip()
    low = text.lower()
    if not low or low == TIMM_PREFIX:
        raise CheckpointError("No architecture was given: name a torchvision or timm architecture (e.g. resnet18, "
                              "timm:convnext_tiny), or let \"Which architecture is this?\" find it.")
    if low.startswith(TIMM_PREFIX):
        spec = _timm_spec(text[len(TIMM_PREFIX):].strip())
        if spec is None:
            raise _unknown(text, timm_only=True)
        return spec
    cat = catalog()
    if low in cat:
        return cat[low]
    if low in _tv_decisions():
        return ArchSpec(low, _tv_display(low), "torchvision")
    spec = _timm_spec(text)
    if spec is None:
        raise _unknown(text, timm_only=False)
    return spec


def _unknown(text: str, timm_only: bool) -> CheckpointError:
    name = text[len(TIMM_PREFIX):] if text.lower().startswith(TIMM_PREFIX) else text
    pool = [TIMM_PREFIX + n for n in _timm().list_models()] + ([] if timm_only else list(catalog()))
    probe = TIMM_PREFIX + name if timm_only else name
    close = difflib.get_close_matches(probe, pool, n=5, cutoff=0.6)
    if not timm_only:  # a bare name is compared with timm's bare names too
        close = (close + [TIMM_PREFIX + n for n in difflib.get_close_matches(name, _timm().list_models(), n=5)])
        close = list(dict.fromkeys(close))[:5]
    where = "timm model" if timm_only else "architecture (torchvision, timm or packaged)"
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return CheckpointError(f"Unknown {where} {name!r}.{hint}")


def _refusal(spec: ArchSpec) -> str:
    """Why the architecture is refused ('' for a CNN), from the index or by building it on ``meta``."""
    if spec.source == "packaged":
        return ""
    if spec.source == "torchvision":
        ok, why = _tv_decisions()[spec.name]
        return "" if ok else why
    idx = stored_index()
    entry = idx.get(TIMM_PREFIX + spec.name.split(".")[0]) if idx else None
    if entry is not None:
        return "" if entry["cnn"] else entry.get("why", "it has no sliding convolutions.")
    return _timm_refusal(spec.key)


@functools.lru_cache(maxsize=256)
def _timm_refusal(key: str) -> str:
    ok, why = conv_verdict(_meta(_spec_unchecked(key), 7))
    return "" if ok else why


def spec_for(key: str) -> ArchSpec:
    """The spec for "resnet18", "timm:convnext_tiny" (a pretrained tag such as ".a1_in1k" may follow) or a bare
    timm name when torchvision has none of that name. Unknown names and networks that are not CNNs raise
    CheckpointError (with up to five close matches, or the reason for the refusal)."""
    spec = _spec_unchecked(key)
    why = _refusal(spec)
    if why:
        raise CheckpointError(f"{spec.display} is refused: {why}")
    return spec


# ---- classifier and preprocessing -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=512)
def classifier_key(key: str) -> str:
    """The state-dict key of the final classifier weight (its first dimension is the class count): the weight
    whose shape follows the class count, found by building the architecture for 7 and for 11 classes."""
    spec = _spec_unchecked(key)
    idx = stored_index()
    entry = idx.get(spec.key.split(".")[0] if spec.source == "timm" else spec.key) if idx else None
    if entry is not None and entry.get("cls"):
        return entry["cls"]
    return classifier_of(_meta(spec, 7), None, spec.display, spec)


def classifier_of(net7: nn.Module, net11: nn.Module | None, what: str, spec: ArchSpec | None = None) -> str:
    """The last weight whose first dimension is 7 in ``net7`` and 11 in ``net11``. Without ``net11`` it is built
    (from ``spec``) only when more than one weight of ``net7`` has 7 rows."""
    a = net7.state_dict()
    sevens = [k for k, v in a.items() if k.endswith("weight") and v.dim() >= 1 and v.shape[0] == 7]
    if net11 is None:
        if len(sevens) == 1:
            return sevens[0]
        net11 = _meta(spec, 11) if spec is not None and sevens else net7
    b = net11.state_dict()
    keys = [k for k in sevens if k in b and b[k].shape[0] == 11]
    if not keys:
        raise CheckpointError(f"{what} has no classifier whose size follows the number of classes.")
    return keys[-1]


def _three(v, default: tuple[float, float, float]) -> tuple[float, float, float]:
    vals = tuple(float(x) for x in (v if v is not None else default))
    return vals * 3 if len(vals) == 1 else vals[:3]  # type: ignore[return-value]


def default_preprocess(key: str) -> Preprocess:
    """The preprocessing the architecture's pretrained weights were made with: torchvision's DEFAULT weights'
    transforms, timm's pretrained config (read from timm's registry, no download) or the Lite preprocessing;
    ImageNet mean/std, resize 256, crop 224 where none is known."""
    spec = _spec_unchecked(key)
    if spec.source == "packaged":  # models.default.PREPROCESS holds every variant's, where it exists
        return getattr(lite_default, "PREPROCESS", {}).get(spec.key, LITE_PREPROCESS)
    fallback = Preprocess(256, 224, IMAGENET_MEAN, IMAGENET_STD)
    if spec.source == "torchvision":
        try:
            t = tvm.get_model_weights(spec.name).DEFAULT.transforms()
        except (ValueError, KeyError, AttributeError):
            return fallback
        return Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std))
    cfg = _pretrained_cfg(spec.name)
    if cfg is None:
        return fallback
    size = int((cfg.input_size or (3, 224, 224))[-1])
    crop_pct = float(cfg.crop_pct or 0.875)
    return Preprocess(resize=round(size / crop_pct), crop=size, mean=_three(cfg.mean, IMAGENET_MEAN),
                      std=_three(cfg.std, IMAGENET_STD))
