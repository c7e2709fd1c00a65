"""Model layer: load trained or pretrained CNNs as ModelHandles (no Streamlit here)."""
from .handle import ModelHandle, Preprocess, label_index
from .registry import DEFAULT_MODEL, ModelEntry, ModelUnavailable, list_models, load_model

__all__ = ["ModelHandle", "Preprocess", "label_index", "DEFAULT_MODEL", "ModelEntry", "ModelUnavailable",
           "list_models", "load_model"]
