"""A torch.fx trace in one thread must not disturb forward passes in other threads (issue 7: the incremental
occlusion engine traces a private copy of a model while other sessions use theirs)."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import fx, nn

from interpret.core.fx_trace import confined_trace


class Stalling(nn.Module):
    """A net whose trace pauses half-way (patches active) until the test lets it go. The events are class
    attributes so that deep copies of the net (the incremental engine traces one) share them."""

    inside = threading.Event()
    go_on = threading.Event()

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        if isinstance(x, fx.Proxy):
            Stalling.inside.set()
            assert Stalling.go_on.wait(20)
        return self.head(x.mean(dim=(2, 3)))


@pytest.fixture(autouse=True)
def _fresh_events():
    Stalling.inside, Stalling.go_on = threading.Event(), threading.Event()
    yield
    Stalling.go_on.set()


def _other_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(5, 3)).eval()


def _forward_during_trace(trace) -> tuple[object, object]:
    """Start ``trace(Stalling())`` in a thread, run another net's forward (with a hook) while the trace is paused,
    then let the trace finish. Returns (forward result or exception, traced module or exception)."""
    stalling, other = Stalling(), _other_net()
    x = torch.randn(2, 3, 9, 9)
    traced: dict[str, object] = {}

    def run():
        try:
            traced["gm"] = trace(stalling)
        except Exception as e:  # noqa: BLE001
            traced["gm"] = e

    t = threading.Thread(target=run)
    t.start()
    assert Stalling.inside.wait(20)
    seen = []
    handle = other[2].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.no_grad():
            out: object = other(x)
    except Exception as e:  # noqa: BLE001
        out = e
    finally:
        handle.remove()
        Stalling.go_on.set()
        t.join(20)
    if not isinstance(out, Exception):
        with torch.no_grad():
            want = other(x)
        assert torch.equal(out, want)
        assert seen == [torch.Size([2, 5, 7, 7])]  # the foreign net's own hook ran as usual
    return out, traced["gm"]


def test_plain_fx_trace_breaks_a_concurrent_forward():
    """The hazard is real: with fx.symbolic_trace, another thread's forward fails mid-trace."""
    out, gm = _forward_during_trace(fx.symbolic_trace)
    assert isinstance(out, Exception)
    assert isinstance(gm, fx.GraphModule)


def test_confined_trace_leaves_a_concurrent_forward_alone():
    out, gm = _forward_during_trace(confined_trace)
    assert isinstance(out, torch.Tensor)
    assert isinstance(gm, fx.GraphModule)
    # the trace itself is the same graph fx would record
    ref = fx.symbolic_trace(Stalling())
    assert [(n.op, str(n.target)) for n in gm.graph.nodes] == [(n.op, str(n.target)) for n in ref.graph.nodes]


def test_confined_trace_computes_the_same_function():
    net = _other_net()
    gm = confined_trace(net)
    x = torch.randn(3, 3, 11, 11)
    with torch.no_grad():
        assert torch.equal(gm(x), net(x))


def test_traced_copy_during_concurrent_forwards():
    """The incremental engine's private, BN-folded copy is traced while another session runs a forward pass."""
    from interpret.engines import copies
    from tests.conftest import make_handle

    torch.manual_seed(1)
    h = make_handle(Stalling(), size=12)
    out, gm = _forward_during_trace(lambda _: copies.traced_copy(h))
    assert isinstance(out, torch.Tensor)
    assert isinstance(gm, fx.GraphModule)
    x = torch.randn(3, 3, 12, 12)
    from tests.roundoff import rounding_bound

    # two float32 evaluations (BN folded or not) of one function: within twice its rounding bound (tests/roundoff.py)
    bound = rounding_bound(h.net, x, lambda z: z).bound
    with torch.no_grad():
        diff = (gm(x.contiguous(memory_format=torch.channels_last)) - h.net(x)).abs().double().numpy()
    assert (diff <= 2 * bound).all()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
