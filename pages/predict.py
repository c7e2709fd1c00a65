"""Predict: the image as the model sees it, the top-5 classes, and a layer table from a real forward pass."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from interpret.units.summary import model_summary, total_params
from pages._ui.charts import show_chart
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, current_image, image_id, image_name, model_caption

st.title("Predict")
model_caption()


@st.cache_data(show_spinner=False, max_entries=64)
def _topk(model_key: str, img_key: str, _img, k: int = 5):
    return current_handle().topk(_img, k)


@st.cache_data(show_spinner="Tracing layers…", max_entries=16)
def _summary(model_key: str) -> pd.DataFrame:
    rows = model_summary(current_handle())
    return pd.DataFrame([{"layer": r.name + (f" (call {r.call})" if r.call > 1 else ""), "type": r.type,
                          "output shape": " × ".join(map(str, r.output_shape)), "parameters": r.params}
                         for r in rows])


with friendly_errors("The prediction"):
    handle = current_handle()
    img = current_image()
    left, right = st.columns([1, 2])
    with left:
        st.image(handle.preprocess.view(img), caption=f"{image_name()} as the model sees it "
                 f"({handle.input_size[0]}×{handle.input_size[1]})", width="stretch")
    with right:
        top = _topk(handle.key, image_id(), img)
        st.subheader(f"Top-1: {top[0][1]} ({top[0][2]:.1%})")
        fig = go.Figure(go.Bar(x=[p for _, _, p in top][::-1], y=[f"{lab} (#{i})" for i, lab, _ in top][::-1],
                               orientation="h", text=[f"{p:.1%}" for _, _, p in top][::-1],
                               hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
        fig.update_layout(xaxis=dict(range=[0, 1], title="probability"), height=300,
                          margin=dict(l=10, r=10, t=10, b=10))
        show_chart(fig, key="topk_chart")
    st.subheader("Model")
    st.markdown(f"**{handle.name}** — {total_params(handle):,} parameters, {handle.num_classes} classes, "
                f"input {handle.input_size[0]}×{handle.input_size[1]}.  \nWeights: {handle.source}")
    with st.expander("Layers (from a forward pass)", expanded=False):
        st.dataframe(_summary(handle.key), hide_index=True, width="stretch")
