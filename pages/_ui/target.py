"""Target-class choice: the predicted class by default, any class from a searchable list of label names.

The choice is one per session, shared by every page that picks a target (Explain, Compare, Trust): a class
picked on Compare is the one Trust checks. It is kept when the image changes (to explain one class across
several images) and reset to "the predicted class" when the model changes.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from models import ModelHandle

from .state import current_image, image_id

CHOICE = "target_choice"  # session key: (model key, class index or None = follow the prediction)


@st.cache_data(show_spinner=False, max_entries=64)
def _probs(model_key: str, img_key: str, _handle: ModelHandle, _img) -> np.ndarray:
    return _handle.predict(_img)


def probabilities(handle: ModelHandle) -> np.ndarray:
    return _probs(handle.key, image_id(), handle, current_image())


def chosen_target(handle: ModelHandle) -> int | None:
    """The class the user picked for this model in this session, or None (follow the prediction)."""
    model, index = st.session_state.get(CHOICE) or (None, None)
    if model != handle.key or index is None or not 0 <= int(index) < handle.num_classes:
        return None
    return int(index)


def pick_target(handle: ModelHandle, key: str = "target") -> int:
    """A selectbox of 'label (#index) — p' entries, top-5 first, then every class; returns the class index.

    ``key`` names this page's widget; its value is set from the session-wide choice before it is drawn, and a
    change is written back to that choice."""
    ss = st.session_state
    model, _ = ss.get(CHOICE) or (None, None)
    if model != handle.key:  # a new model: back to its predicted class
        ss[CHOICE] = (handle.key, None)
    p = probabilities(handle)
    order = [int(i) for i in np.argsort(-p)]
    picked = chosen_target(handle)
    wanted = picked if picked is not None else order[0]
    widget = f"{key}_{handle.key}"
    if ss.get(widget) != wanted:
        ss[widget] = wanted

    def _changed() -> None:
        ss[CHOICE] = (handle.key, int(ss[widget]))

    labels = handle.labels
    choice = st.selectbox("Target class (type to search)", order, key=widget, on_change=_changed,
                          format_func=lambda i: f"{labels[i]} (#{i}) — {p[i]:.1%}",
                          help="The predicted class by default; any class can be explained. The choice is "
                               "shared by Explain, Compare and Trust and kept for new images until you pick "
                               "another class or change the model.")
    return int(choice)
