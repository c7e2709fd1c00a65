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


def click(at, label: str) -> None:
    """Press the button labelled ``label`` and rerun (AssertionError listing the buttons when there is none)."""
    for b in at.button:
        if b.label == label:
            b.click().run()
            return
    raise AssertionError(f"no button {label!r}: {[b.label for b in at.button]}")


def assert_clean(at) -> None:
    """No exception and no error message on the page."""
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
