"""Target-class choice: the predicted class by default, any class from a searchable list of label names."""
from __future__ import annotations

import numpy as np
import streamlit as st

from models import ModelHandle

from .state import current_image, image_id


@st.cache_data(show_spinner=False, max_entries=64)
def _probs(model_key: str, img_key: str, _handle: ModelHandle, _img) -> np.ndarray:
    return _handle.predict(_img)


def probabilities(handle: ModelHandle) -> np.ndarray:
    return _probs(handle.key, image_id(), handle, current_image())


def pick_target(handle: ModelHandle, key: str = "target") -> int:
    """A selectbox of 'label (index) — p' entries, top-5 first, then every class; returns the class index."""
    p = probabilities(handle)
    order = list(np.argsort(-p))
    options = [f"{handle.labels[i]} (#{i}) — {p[i]:.1%}" for i in order]
    choice = st.selectbox("Target class (type to search)", options, index=0, key=f"{key}_{handle.key}",
                          help="The predicted class by default; any class can be explained.")
    return int(order[options.index(choice)])
