"""Filters: the weights of any conv layer — first-layer filters as colour images, deeper filters as
per-input-channel kernel grids or kernel norms, depthwise filters one k×k kernel per channel."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from interpret.core.errors import InputError
from interpret.units.filters import depthwise_kernels, filter_bank, filter_norms, kernel_grid, rgb_filters
from interpret.plots.units import depthwise_figure, filter_norms_figure, filters_figure, kernel_grid_figure
from pages._ui.charts import show_chart
from pages._ui.guard import friendly_errors
from pages._ui.state import current_handle, model_caption
from pages._ui.units_ui import conv_names

st.title("Filters")
model_caption()

NORMALIZATION_HELP = {
    "minmax": "per filter, over all its 3·k·k weights: (w − min) / (max − min). Every filter uses the full "
              "range, so weak filters look as bright as strong ones (as in the AlexNet 96-filter figure).",
    "symmetric": "per filter: 0.5 + w / (2·max|w|). Zero weight is mid-grey, so positive and negative parts are "
                 "readable; weak filters stay greyish.",
}

with friendly_errors("The filter view"):
    handle = current_handle()
    convs = conv_names(handle.key, handle)
    if not convs:
        raise InputError(f"{handle.name} has no Conv2d layer.")
    layer = st.selectbox("Conv layer", convs, index=0, key=f"filters_layer_{handle.key}",
                         help="Every Conv2d module of the network, in definition order.")
    bank = filter_bank(handle, layer)
    kh, kw = bank.kernel
    per = bank.weight.shape[1]
    kind = ("depthwise" if bank.depthwise else "first layer (RGB)" if bank.is_rgb
            else f"grouped ({bank.groups} groups)" if bank.groups > 1 else "standard")
    st.markdown(f"**{layer}**: {bank.out_channels} filters of {per}×{kh}×{kw} ({kind}), stride "
                f"{bank.stride[0]}, dilation {bank.dilation[0]}; {bank.weight.size:,} weights.")

    if bank.is_rgb:
        mode = st.radio("Normalization (per filter)", list(NORMALIZATION_HELP), horizontal=True,
                        key="filters_norm", format_func=str.capitalize)
        st.caption(f"**{mode}**: {NORMALIZATION_HELP[mode]}")
        images = rgb_filters(bank, mode)
        cols = st.slider("Columns", 4, 32, min(16, max(4, int(round(bank.out_channels ** 0.5 * 1.5)))),
                         key="filters_cols")
        fig = filters_figure(images, bank, cols=cols)
        rows = -(-bank.out_channels // cols)
        fig.update_layout(height=int(min(900, max(250, 1000 * rows / cols))))
        show_chart(fig, key="filters_rgb")
        st.caption(f"{bank.out_channels} filters shown as {kh}×{kw} colour images (R, G, B = the weights on "
                   "the red, green and blue input channels). Hover for index and statistics.")
    elif bank.depthwise:
        st.caption("A depthwise convolution: each channel has a single k×k kernel that only sees that channel. "
                   "Each kernel is normalized symmetrically (white = 0, red > 0, blue < 0).")
        fig = depthwise_figure(depthwise_kernels(bank, "symmetric"), bank)
        fig.update_layout(height=700)
        show_chart(fig, key="filters_depthwise")
    else:
        view = st.radio("Show", ["One filter, per input channel", "Kernel norms (all filters × inputs)"],
                        horizontal=True, key="filters_view")
        if view.startswith("One filter"):
            idx = int(st.number_input("Filter (output channel)", 0, bank.out_channels - 1, 0, 1,
                                      key=f"filters_index_{handle.key}_{layer}"))
            st.caption(f"Filter {idx} has one {kh}×{kw} kernel for each of its {per} input channels; all of them "
                       "share one symmetric normalization (white = 0, red > 0, blue < 0)."
                       + (" With 1×1 kernels each tile is a single weight; the kernel-norm view shows the whole "
                          "layer at once." if (kh, kw) == (1, 1) else ""))
            fig = kernel_grid_figure(kernel_grid(bank, idx, "symmetric"), bank, idx)
            fig.update_layout(height=650)
            show_chart(fig, key="filters_grid")
        else:
            st.caption("The L2 norm of each k×k kernel: bright cells show which input channels a filter listens to.")
            fig = filter_norms_figure(filter_norms(bank), bank.layer)
            fig.update_layout(height=650)
            show_chart(fig, key="filters_norms")

    with st.expander("Per-filter statistics"):
        s = bank.stats()
        st.dataframe(pd.DataFrame({"filter": range(bank.out_channels), **{k: v for k, v in s.items()}}),
                     hide_index=True, width="stretch", key="filters_stats")
