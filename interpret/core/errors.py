"""The errors a user can cause, as one family: the UI shows these (and the model floor's own ``ImageError``,
``CheckpointError``, ``ModelUnavailable``) as plain messages; anything else is an internal fault, logged with its
traceback and reported as such.

Each subclass also derives from the built-in type callers caught before (``ValueError`` for bad input), so code and
tests that catch the built-in keep working.
"""
from __future__ import annotations

__all__ = ["CnnLensError", "DeviceOutOfMemory", "InputError", "NotDefined"]


class CnnLensError(Exception):
    """Base of every error whose message is meant for the user."""


class InputError(CnnLensError, ValueError):
    """A parameter, image, layer, channel or class the computation cannot take (the message says which and why)."""


class NotDefined(CnnLensError, ValueError):
    """A method does not apply to this network (e.g. CAM without global average pooling + one linear layer)."""



class DeviceOutOfMemory(CnnLensError, MemoryError):
    """The device ran out of memory even at batch size 1 (the message names the device, the computation and what
    to try)."""
