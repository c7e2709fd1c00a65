"""``torch.fx`` tracing that leaves other threads' forward passes alone.

While ``fx.symbolic_trace`` runs, it replaces ``nn.Module.__call__`` and ``nn.Module.__getattr__`` for the whole
process. A forward pass of another model in another thread (another Streamlit session) during that window is routed
into the tracer, which fails on modules it does not own (``NameError: module is not installed as a submodule``) or
could record them. ``confined_trace`` traces with a tracer that acts only in the thread that started it: in any other
thread the patched ``__call__`` runs the module as usual and ``__getattr__`` returns the plain attribute. The
remaining process-wide effects of tracing are wrappers around a few global functions (``math.*`` and
``torch.fx.wrap``-ed ones), which call straight through for ordinary tensors. Traces themselves run one at a time
(a module-wide lock): two overlapping traces would restore fx's patches out of order.

Written by hand because torch offers no thread-confined tracing; it relies only on ``Tracer.call_module`` and
``Tracer.getattr``, the documented extension points.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from torch import fx, nn


_ONE_TRACE = threading.Lock()


class ConfinedTracer(fx.Tracer):
    """An ``fx.Tracer`` that records only calls made by the thread running ``trace``."""

    def __init__(self) -> None:
        super().__init__()
        self._owner: int | None = None

    def _foreign(self) -> bool:
        return threading.get_ident() != self._owner

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        self._owner = threading.get_ident()
        try:
            return super().trace(root, concrete_args)
        finally:
            self._owner = None

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        if self._foreign():  # another thread's real forward pass: run it untouched
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if self._foreign():
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def confined_trace(net: nn.Module) -> fx.GraphModule:
    """``fx.symbolic_trace(net)``, safe while other threads run forward passes (see the module docstring)."""
    tracer = ConfinedTracer()
    with _ONE_TRACE:
        graph = tracer.trace(net)
    name = net.__class__.__name__
    return fx.GraphModule(tracer.root, graph, name)
