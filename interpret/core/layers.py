"""Layer references by module path, validated up front with a helpful error listing the valid names, and one
``capture`` of a layer's output during a forward pass.

Module paths (``features.28``, ``layer4.1.conv2``, ``_blocks.15._project_conv``) are used rather than FX node
names because they exist for every ``nn.Module`` — user and operator networks that FX cannot trace included.
A module that is called several times in one forward pass (torchvision ResNet's ``relu``) has one output per
call; ``call_index`` picks one (default ``-1``: the last call), numbered as the receptive-field table numbers them.

``capture`` is the only place that hooks a layer to read its output: per call, under the model's lock, removed
on exit (see ``interpret.core.hooks``). Gradient methods, unit views and the default Grad-CAM layer all use it.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence, TypeVar

import torch
from torch import nn

from interpret.core.errors import InputError, NotDefined
from interpret.core.hooks import hooked
from interpret.core.tensors import on_device

POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# Modules that pass a map on without computing a new one (pooling, dropout, identity, flatten): never the layer
# a CAM reads from, and a container whose output is theirs is not one either.
PASSIVE_TYPES = POOL_TYPES + (nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten)

T = TypeVar("T")


def get_module(net: nn.Module, name: str) -> nn.Module:
    """The submodule at ``name``; InputError listing close valid names if there is none."""
    mods = dict(net.named_modules())
    if name in mods and name:
        return mods[name]
    near = [n for n in mods if n and (name in n or n.split(".")[-1] == name.split(".")[-1])][:10]
    hint = ", ".join(near) if near else ", ".join([n for n in mods if n][:10]) + ", …"
    raise InputError(f"no layer named {name!r} in this network; valid names include: {hint}")


def pick_call(calls: Sequence[T], layer: str, call_index: int) -> T:
    """``calls[call_index]`` of a layer called ``len(calls)`` times; InputError saying so if out of range."""
    try:
        return calls[call_index]
    except IndexError:
        raise InputError(f"layer {layer!r} is called {len(calls)} time(s); "
                         f"call_index {call_index} is out of range") from None


class _Stop(Exception):
    """Raised by a capture hook once the wanted call has run, so the rest of the network is skipped; caught by
    the ``Capture`` that raised it."""


class Capture:
    """What the hooks of one ``capture`` recorded during its forward pass (``run``).

    ``records``: (module path, output) of every tensor output of the hooked module(s), in call order; for one
    layer with ``call_index >= 0`` the other calls are recorded as None (counted, not kept)."""

    def __init__(self, net: nn.Module, layer: str | None, call_index: int, grad: bool, copy: bool,
                 stop: bool) -> None:
        self.net, self.layer, self.call_index = net, layer, int(call_index)
        self.records: list[tuple[str, torch.Tensor | None]] = []
        self.result: Any = None
        self.stopped = False
        self._grad, self._copy = grad, copy
        self._stop_at = self.call_index if stop and layer is not None and self.call_index >= 0 else None
        self._non_tensor = False

    def _hook(self, name: str):
        def hook(module, inputs, out):
            if not torch.is_tensor(out):
                self._non_tensor = True
                return None
            call = len(self.records)  # one layer: the number of this call
            wanted = self.layer is None or self.call_index < 0 or call == self.call_index
            last = call == self._stop_at
            self.records.append((name, self._own(out, last) if wanted else None))
            if last:
                raise _Stop(self)
            # With gradients the network goes on with a copy, so no later in-place op changes the kept output.
            return out.clone() if wanted and self._grad and self._copy else None
        return hook

    def _own(self, out: torch.Tensor, last: bool) -> torch.Tensor:
        if last or not self._copy or self._grad:
            return out  # nothing runs after it / the very tensor is wanted / kept in the graph
        return out.detach().clone()  # a later in-place op in the network must not change it

    def run(self, x: torch.Tensor) -> Any:
        """One forward pass of ``x`` (recording gradients only with ``grad``); the network's output, or None
        when the pass was stopped once the wanted call had run."""
        self.records.clear()
        self._non_tensor, self.stopped = False, False
        with torch.enable_grad() if self._grad else torch.no_grad():
            try:
                self.result = self.net(on_device(self.net, x))  # a probe made on the CPU runs where the net is
            except _Stop as e:
                if e.args[0] is not self:
                    raise
                self.result, self.stopped = None, True
        return self.result

    @property
    def n_calls(self) -> int:
        """Calls of the layer seen in the pass (every call, unless the pass was stopped early)."""
        return len(self.records)

    @property
    def output(self) -> torch.Tensor:
        """The layer's output at call ``call_index``; InputError if it gave none or the call does not exist."""
        if not self.records:
            why = "does not return a single tensor" if self._non_tensor else "is not used in the forward pass"
            raise InputError(f"layer {self.layer!r} {why}")
        return pick_call([o for _, o in self.records], self.layer, self.call_index)


@contextmanager
def capture(handle_or_net, layer: str | None, call_index: int = -1, *, lock=None, grad: bool = False,
            copy: bool = True, stop: bool = False) -> Iterator[Capture]:
    """Hook ``layer`` (a module path; None: every named submodule) for the forward pass run inside the block::

        with capture(handle, "layer4", grad=True) as cap:
            logits = cap.run(x)
            (g,) = torch.autograd.grad(logits[0, c], cap.output)  # still under the lock

    ``handle_or_net``: a ModelHandle (its net and lock) or a bare ``nn.Module`` (``lock`` or a private lock).
    ``grad``: the pass records gradients and the kept output stays in the graph. ``copy`` (default): the kept
    output is the layer's output as it was produced, whatever in-place op follows it (no-grad: a detached copy;
    with grad: the network goes on with a copy); without it the very tensor is kept (its identity is wanted).
    ``stop``: the pass ends once call ``call_index`` (>= 0; a negative index needs the whole pass) has run.
    The lock is held for the whole block; the hooks are removed on exit, also on error.
    """
    net = getattr(handle_or_net, "net", handle_or_net)
    if lock is None:
        lock = getattr(handle_or_net, "lock", None) or threading.RLock()
    if layer is None:
        modules = [(n, m) for n, m in net.named_modules() if n]
    else:
        modules = [(layer, get_module(net, layer))]
    cap = Capture(net, layer, call_index, grad, copy, stop)
    with hooked(lock) as hs:
        for name, m in modules:
            hs.forward(m, cap._hook(name))
        yield cap


def last_conv_block(net: nn.Module, input_size: tuple[int, int] = (224, 224), lock=None) -> str:
    """The usual Grad-CAM layer: the last module (outermost of those returning the same tensor) whose output
    is still a spatial map (N, C, H, W with H, W > 1) and not a pooling or dropout output — ``layer4`` on
    ResNets, ``features.29`` on VGG16, ``inception5b`` on GoogLeNet, ``_act_head`` on EfficientNet-Lite.

    Found from a real forward pass on zeros, so it works for any architecture.
    """
    modules = dict(net.named_modules())
    with capture(net, None, lock=lock, copy=False) as cap:  # the very tensors: identity tells containers apart
        cap.run(torch.zeros(1, 3, *input_size))
    passive = {n for n, _ in cap.records if isinstance(modules[n], PASSIVE_TYPES)}
    passive_ids = {id(o) for n, o in cap.records if n in passive}
    spatial = [n for n, o in cap.records
               if n not in passive and id(o) not in passive_ids and o.dim() == 4 and o.shape[2] > 1 and o.shape[3] > 1]
    if not spatial:
        raise NotDefined("this network has no spatial layer")
    return spatial[-1]
