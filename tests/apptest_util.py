"""AppTest helper shared by the page tests."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def navigation_only() -> Iterator[None]:
    """Run app.py on every AppTest rerun, as the served app does once st.navigation has been called.

    AppTest resets Streamlit's legacy "pages/ folder" flag before each run, which makes reruns execute the page
    file alone; a served app calls st.navigation on its first run and keeps the flag off from then on.
    """
    from streamlit.runtime.pages_manager import PagesManager

    orig = PagesManager.__init__

    def init(self, *a, **k):
        orig(self, *a, **k)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    try:
        yield
    finally:
        PagesManager.__init__ = orig
