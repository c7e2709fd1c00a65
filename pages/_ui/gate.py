"""Run gates: a long computation runs only for settings the user asked for with its button.

A press stores the request (a tuple of everything the result depends on, compared by equality) in session state
under the page's key; while the settings shown equal the stored request the result is drawn (from cache after the
first run), and editing any setting hides it again until the next press. Stop buttons drop the key
(``units_ui.stop_button``), so an interrupted run does not start again on the rerun.
"""
from __future__ import annotations

import streamlit as st


def requested(key: str, request: object, pressed: bool) -> bool:
    """Store ``request`` under ``key`` if the button was ``pressed``; whether ``request`` is the one last asked
    for (the result of these settings should be shown)."""
    if pressed:
        st.session_state[key] = request
    return st.session_state.get(key) == request


def require(key: str, request: object, pressed: bool, prompt: str) -> None:
    """As ``requested``; when these settings were not asked for, show ``prompt`` and end the page's run here."""
    if not requested(key, request, pressed):
        st.info(prompt)
        st.stop()
