"""The page guard (pages/_ui/guard.py): errors a user can cause are shown as their message; anything else — a bare
ValueError or KeyError from inside a page is a bug — as the generic "failed unexpectedly" note, never its text."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from streamlit.testing.v1 import AppTest

from interpret.core.errors import InputError
from models import LabelError, ModelHandle, label_index
from pages._ui import guard
from pages._ui.explain_ui import _json_dict

# A page body that raises one error inside the guard; the app shell (sidebar, navigation) is not under test.
PAGE = """
import {module} as where
from pages._ui.guard import friendly_errors

with friendly_errors("The view"):
    raise where.{name}({message!r})
"""

SECRET = "internal detail 42"


def _errors_shown(module: str, name: str, message: str, monkeypatch) -> list[str]:
    monkeypatch.setattr(guard, "ensure_shell", lambda: None)
    at = AppTest.from_string(PAGE.format(module=module, name=name, message=message), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return [e.value for e in at.error]


@pytest.mark.parametrize("name", ["ValueError", "KeyError", "TypeError", "RuntimeError"])
def test_internal_errors_are_a_generic_note(name, monkeypatch):
    shown = _errors_shown("builtins", name, SECRET, monkeypatch)
    assert len(shown) == 1, shown
    assert f"The view failed unexpectedly ({name})" in shown[0]
    assert SECRET not in shown[0]


@pytest.mark.parametrize("module, name", [
    ("interpret.core.errors", "InputError"),
    ("interpret.core.errors", "NotDefined"),
    ("interpret.core.errors", "CnnLensError"),
    ("models", "LabelError"),
    ("models", "ModelUnavailable"),
    ("models.images", "ImageError"),
    ("models.checkpoints", "CheckpointError"),
])
def test_user_errors_show_their_message(module, name, monkeypatch):
    message = "Channels [99] are out of range: this layer has channels 0…63."
    assert _errors_shown(module, name, message, monkeypatch) == [message]


def test_expected_errors_leave_out_the_built_in_types():
    assert ValueError not in guard.EXPECTED and KeyError not in guard.EXPECTED
    assert issubclass(InputError, ValueError) and issubclass(LabelError, ValueError)  # old handlers still catch


def test_user_mistakes_raise_expected_errors():
    """The raise sites users reach: a class that does not exist, a classifier without classes, typed JSON."""
    handle = SimpleNamespace(num_classes=2, labels=["cat", "dog"])
    for bad in (2, -1, "7", "zebra"):
        with pytest.raises(LabelError):
            label_index(handle, bad)
    assert label_index(handle, "Dog") == 1
    with pytest.raises(LabelError, match="at least one output class"):
        ModelHandle("k", "Empty", torch.nn.Identity(), None, [], "test")
    for text in ("{not json", "[1, 2]"):
        with pytest.raises(guard.EXPECTED):
            _json_dict(text, "Segmentation settings")
