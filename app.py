"""CNN Lens — Streamlit entry point: navigation over pages/ and the shared sidebar (model + image)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

# lime draws a tqdm bar on stderr for every explanation; tqdm reads this variable when first imported.
os.environ.setdefault("TQDM_DISABLE", "1")

import streamlit as st

from pages._ui.state import sidebar, wanted_page

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="CNN Lens", page_icon="🔬", layout="wide")

HERE = Path(__file__).parent
# (section, file in pages/, title, icon); a page whose file is absent is skipped.
PAGES = [
    ("Model", "predict.py", "Predict", "🏷️"),
    ("Units", "filters.py", "Filters", "🧩"),
    ("Units", "activations.py", "Activation maps", "🗺️"),
    ("Units", "receptive_field.py", "Receptive fields", "🎯"),
    ("Units", "top_patches.py", "Top patches", "🧱"),
    ("Units", "feature_vis.py", "Synthesized images", "✨"),
    ("Explanations", "explain.py", "Explain", "🔍"),
    ("Explanations", "compare.py", "Compare", "🧮"),
    ("Explanations", "trust.py", "Trust", "🧪"),
    ("Classroom", "classroom.py", "Classroom walk-through", "🎓"),
]

sections: dict[str, list] = {}
by_file: dict[str, st.Page] = {}
for section, file, title, icon in PAGES:
    path = HERE / "pages" / file
    if path.is_file():
        by_file[file] = st.Page(str(path), title=title, icon=icon, default=(file == "predict.py"))
        sections.setdefault(section, []).append(by_file[file])

nav = st.navigation(sections)
wanted = wanted_page()
if wanted in by_file:
    st.switch_page(by_file[wanted])
sidebar()
nav.run()
