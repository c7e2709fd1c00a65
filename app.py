"""CNN Lens — Streamlit entry point: navigation over pages/ and the shared sidebar (model + image)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

# lime draws a tqdm bar on stderr for every explanation; tqdm reads this variable when first imported.
os.environ.setdefault("TQDM_DISABLE", "1")

import streamlit as st

from interpret.core.runtime import tune_allocator
from pages._ui.state import note_page, sidebar, wanted_page

tune_allocator()  # before the first click's thread: every script run is a new thread (interpret/core/runtime.py)

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="CNN Lens", page_icon=":material/biotech:", layout="wide")

HERE = Path(__file__).parent
# (section, file in pages/, title, Material icon); a page whose file is absent is skipped. Material icons are
# drawn from the font Streamlit bundles, so they show in browsers without an emoji font (emoji did not).
PAGES = [
    ("Model", "predict.py", "Predict", ":material/label:"),
    ("Model", "compare_models.py", "Compare models", ":material/difference:"),
    ("Model", "camera.py", "Camera", ":material/photo_camera:"),
    ("Units", "filters.py", "Filters", ":material/grid_view:"),
    ("Units", "activations.py", "Activation maps", ":material/layers:"),
    ("Units", "receptive_field.py", "Receptive fields", ":material/center_focus_strong:"),
    ("Units", "top_patches.py", "Top patches", ":material/photo_library:"),
    ("Units", "feature_vis.py", "Synthesized images", ":material/auto_awesome:"),
    ("Units", "dissection.py", "Dissection", ":material/category:"),
    ("Units", "ablation.py", "Unit ablation", ":material/block:"),
    ("Explanations", "explain.py", "Explain", ":material/search:"),
    ("Explanations", "compare.py", "Compare", ":material/compare:"),
    ("Explanations", "trust.py", "Trust", ":material/verified:"),
    ("Explanations", "brush.py", "What if I hide this?", ":material/ink_eraser:"),
    ("Classroom", "classroom.py", "Classroom walk-through", ":material/school:"),
]

sections: dict[str, list] = {}
by_file: dict[str, st.Page] = {}
for section, file, title, icon in PAGES:
    path = HERE / "pages" / file
    if path.is_file():
        by_file[file] = st.Page(str(path), title=title, icon=icon, default=(file == "predict.py"))
        sections.setdefault(section, []).append(by_file[file])

# expanded: every page stays listed (with 15 pages Streamlit would fold the later ones behind "View more").
nav = st.navigation(sections, expanded=True)
wanted = wanted_page()
if wanted in by_file:
    st.switch_page(by_file[wanted])
note_page(nav.url_path)
sidebar()
nav.run()
