"""CNN Lens core: pure-Python computations over a ModelHandle, returning numpy arrays, dataclasses or figures."""
