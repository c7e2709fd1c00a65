"""Run page code so that users see a plain message, never a traceback; the traceback goes to the server log."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import streamlit as st
from streamlit.runtime.scriptrunner import RerunException, StopException

from interpret.result import NotDefined
from models import ModelUnavailable
from models.checkpoints import CheckpointError
from models.images import ImageError

log = logging.getLogger("cnn_lens")

EXPECTED = (NotDefined, ModelUnavailable, CheckpointError, ImageError, ValueError)


@contextmanager
def friendly_errors(what: str = "This view") -> Iterator[None]:
    """Show expected errors as their message, unexpected ones as a generic note (logged with traceback).

    Also makes sure the page runs inside the app shell (sidebar, navigation)."""
    from .state import _ensure_shell

    _ensure_shell()
    try:
        yield
    except (RerunException, StopException):
        raise
    except EXPECTED as e:
        st.error(str(e))
        log.info("%s: %s", what, e)
    except Exception as e:  # noqa: BLE001 - the user must never see a traceback
        log.exception("%s failed", what)
        st.error(f"{what} failed unexpectedly ({type(e).__name__}). The error was logged on the server; "
                 "your session, model and image are kept.")
