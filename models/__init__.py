"""Model layer: load trained or pretrained CNNs as ModelHandles (no Streamlit here)."""
from .handle import LabelError, ModelHandle, Preprocess, label_index
from .registry import DEFAULT_MODEL, ModelEntry, ModelUnavailable, list_models, load_model

__all__ = ["LabelError", "ModelHandle", "Preprocess", "label_index", "DEFAULT_MODEL", "ModelEntry",
           "ModelUnavailable", "list_models", "load_model"]
