"""Run page code so that users see a plain message, never a traceback; the traceback goes to the server log."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import streamlit as st
from streamlit.runtime.scriptrunner import RerunException, StopException

from interpret.core.errors import CnnLensError
from models import LabelError, ModelUnavailable
from models.checkpoints import CheckpointError
from models.collections import CollectionError
from models.images import ImageError

from .state import ensure_shell

log = logging.getLogger("cnn_lens")

# The errors a user can cause, each with a message meant for them; anything else is an internal fault.
EXPECTED = (CnnLensError, ImageError, CheckpointError, CollectionError, ModelUnavailable, LabelError)


@contextmanager
def friendly_errors(what: str = "This view") -> Iterator[None]:
    """Show expected errors (``EXPECTED``) as their message, any other as a generic note (logged with its
    traceback): a bare ValueError or KeyError is a bug, not something to tell the user.

    Also makes sure the page runs inside the app shell (sidebar, navigation)."""
    ensure_shell()
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
