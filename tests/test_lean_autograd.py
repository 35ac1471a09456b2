"""The gradient pass's memory savings (issue 24): the same gradients and maps, less kept.

- eval BatchNorm with ``lean_batch_norms`` (on an eval view) gives autograd's own input gradient
  and saves no input;
- ``capture(reduce=...)`` computes every layer's map in the backward (the roots' gradients come
  back, the others arrive through hooks), keeps a widening 1x1 conv's input instead of its output,
  and releases each call's graph (no reference cycle through the hooks).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import fastinterp
from fastinterp.maps.eval_view import eval_view
from fastinterp.maps.lean_autograd import lean_batch_norms
from conftest import max_rel_error, naive_layer_maps

capture_module = importlib.import_module("fastinterp.maps.capture")


@pytest.fixture(autouse=True)
def lean_at_every_size(monkeypatch):
    """The lean capture runs from LEAN_FROM_PIXELS on; these tests use small images."""
    from fastinterp.maps import representation

    monkeypatch.setattr(representation, "LEAN_FROM_PIXELS", 0)


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves while ``fn`` runs (saved_tensors_hooks)."""
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(total), out


@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (2, 4, 9), (4, 6)])
@pytest.mark.parametrize("affine", [True, False])
def test_eval_batch_norm_gives_autograds_gradient_and_saves_no_input(shape, affine):
    torch.manual_seed(shape[0] + affine)
    bn = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1], affine=affine).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    if affine:
        with torch.no_grad():
            bn.weight.normal_()
            bn.bias.normal_()
    x = torch.randn(shape, requires_grad=True)
    g = torch.randn(shape)
    plain_saved, plain = saved_bytes(lambda: bn(x))
    (plain_grad,) = torch.autograd.grad(plain, x, g)
    view = eval_view(bn)
    lean_batch_norms(view)
    lean_saved, lean = saved_bytes(lambda: view(x))
    lean_grad = torch.full_like(x, float("nan"))  # poisoned: the gradient must be written
    (lean_grad,) = torch.autograd.grad(lean, x, g)
    assert torch.equal(lean, plain)
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-6, atol=0)
    assert plain_saved >= x.numel() * 4 and lean_saved < x.numel() * 4  # the input is not kept
    assert all(p.grad is None for p in bn.parameters())
    assert "forward" not in bn.__dict__  # the model's module is untouched: only the view's copy


def test_batch_norm_without_grad_or_own_forward_runs_the_plain_op():
    bn = nn.BatchNorm2d(3).eval()
    x = torch.randn(4, 3, 5, 5)
    view = eval_view(bn)
    lean_batch_norms(view)
    assert type(view(x).grad_fn).__name__ == "NativeBatchNormBackward0"  # an input needing no gradient
    with pytest.raises(ValueError, match="expected 4D input"):
        view(torch.randn(3, 5, requires_grad=True))  # the module's own input check
    custom = nn.BatchNorm2d(3).eval()
    custom.forward = lambda x: x * 2  # a forward of its own: left alone
    view = eval_view(custom)
    lean_batch_norms(view)
    assert torch.equal(view(x), x * 2)


class Bottlenecks(nn.Module):
    """Widening 1x1 convs (stride 1 and 2, with bias), a 1x1 conv with a user's hook that changes
    its output (must not be computed from its input), a branch that skips the first conv (a
    second root) and a conv whose output the score does not depend on."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.side = nn.Conv2d(3, 32, 1, stride=2)  # on the input: not below the stem
        self.reduce = nn.Conv2d(8, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.widen = nn.Conv2d(4, 16, 1)  # stride 1, bias
        self.down = nn.Conv2d(16, 32, 1, stride=2)  # stride 2, bias
        self.hooked = nn.Conv2d(32, 64, 1)
        self.unused = nn.Conv2d(64, 128, 1)
        self.head = nn.Linear(64, 5)
        self.hooked.register_forward_hook(lambda module, args, out: out * 2 + 1)

    def forward(self, x):
        y = torch.relu(self.bn(self.reduce(torch.relu(self.stem(x)))))
        y = torch.relu(self.down(torch.relu(self.widen(y)))) + self.side(x)
        y = torch.relu(self.hooked(y))
        _ = self.unused(y)
        return self.head(y.mean(dim=(2, 3)))


def test_lean_capture_matches_the_naive_loop_and_takes_the_1x1_path():
    torch.manual_seed(0)
    model = Bottlenecks().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.rand(3, 3, 16, 16)
    first = fastinterp.layer_maps(model, x)  # learns which outputs are written in place
    taken = []
    original = capture_module._widening_1x1_input

    def spy(module, inputs, output):
        kept = original(module, inputs, output)
        taken.append((module.out_channels, kept is not None))
        return kept

    capture_module._widening_1x1_input = spy
    try:
        again = fastinterp.layer_maps(model, x)
    finally:
        capture_module._widening_1x1_input = original
    # widening 1x1 convs keep their input (side, widen, down, unused); the 3x3 stem, the narrowing
    # reduce and the hooked conv (its hook changes the output) keep their output
    assert dict(taken) == {8: False, 32: True, 4: False, 16: True, 64: False, 128: True}
    naive = naive_layer_maps(model, x, first.layer_names, first.targets)
    for name, a, b, n in zip(first.layer_names, first.maps, again.maps, naive):
        assert max_rel_error(a, n) <= 1e-4, name
        assert max_rel_error(b, n) <= 1e-4, name
    assert not again.maps[first.layer_names.index("unused")].any()  # no gradient reaches it


def test_roots_are_the_outputs_with_no_output_below_them():
    torch.manual_seed(1)
    model = Bottlenecks().eval()
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    outputs = {}
    for name in ("stem", "side", "widen", "hooked"):
        getattr(model, name).register_forward_hook(lambda m, a, o, name=name: outputs.setdefault(name, o))
    score = model(x).sum()
    names = list(outputs)
    roots = capture_module._roots(score, [outputs[n].grad_fn for n in names])
    assert sorted(names[i] for i in roots) == ["side", "stem"]


def test_repeated_calls_release_their_graphs():
    """The hooks on autograd's nodes hold what the pass kept: a cycle the collector cannot see
    unless capture breaks it (it did not at first: every call's graph stayed alive)."""
    import gc
    import weakref

    model = Bottlenecks().eval()
    x = torch.rand(2, 3, 16, 16)
    fastinterp.layer_maps(model, x)
    seen = []
    original = capture_module._Kept.map

    def spy(self, reduce, grad):
        seen.append(weakref.ref(self))
        return original(self, reduce, grad)

    capture_module._Kept.map = spy
    try:
        fastinterp.layer_maps(model, x)
    finally:
        capture_module._Kept.map = original
    gc.collect()
    assert seen and all(ref() is None for ref in seen)
