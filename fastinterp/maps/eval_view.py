"""Running a user's model without touching it: a per-call *eval view* of its module tree.

``eval_view(model)`` returns a shallow copy of every module of ``model``: the copies share the
parameters, buffers and hooks (the same dictionaries: nothing is copied but each module's attribute
table) but have their own ``training`` flags, all False (eval semantics: BatchNorm reads and never
updates its running statistics, dropout is off, a parametrization such as spectral_norm runs no
power iteration). :func:`set_forward_hook` (per call) and :func:`add_forward_hook` put a hook on a
module of the view only: that module gets its own forward or its own hook dictionaries, so the
model's module never sees it (the user's own hooks still run in the view).

Why a view and not ``model.eval()`` + restore: flipping the user's flags and adding hooks to the
user's modules is visible to everyone using the model at the same time. Two threads explaining
one model saw each other's forwards through shared hooks, and one thread's restore of the
training flags put the other's forward in train mode (BatchNorm statistics changed). With a view
per call, concurrent calls share nothing mutable, and the model is never modified, also if an
exception is raised mid-way.

Limit: a module that holds other modules outside ``_modules`` (a plain list or an attribute set
with ``object.__setattr__``) still calls the originals, in their own mode.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks
from torch.utils.hooks import RemovableHandle

__all__ = ["add_forward_hook", "add_forward_pre_hook", "eval_view", "eval_view_with", "runs_class_forward",
           "set_forward_hook"]

# what register_forward_hook writes to (the last two only for its keyword options)
_FORWARD_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")
_FORWARD_PRE_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs")


def eval_view(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree in eval mode sharing its tensors (see the module doc).

    Costs one attribute-table copy per module (measured in benchmarks/NOTES.md: ~1-2 us each)."""
    return eval_view_with(model, ())[0]


def eval_view_with(model: nn.Module, kinds: type | tuple[type, ...]) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    """``eval_view(model)`` and, from the same walk over the tree, ``(name, view module)`` of every
    module that is an instance of ``kinds``, in ``named_modules()`` order and naming (a module used
    in several places once, at its first name): what a caller would otherwise find by walking the
    view a second time."""
    found: list[tuple[str, nn.Module]] = []
    return _copy(model, "", {}, found, kinds), found


def _copy(module: nn.Module, name: str, copies: dict[int, nn.Module], found: list, kinds) -> nn.Module:
    """The view's copy of ``module`` and, recursively, of its children. A plain function, not a
    closure over itself: a view holds no reference cycle, so a dropped view (with what its hooks
    hold) is freed at once, not at the garbage collector's next pass."""
    done = copies.get(id(module))
    if done is not None:  # a module used in several places stays one module
        return done
    clone = object.__new__(type(module))  # no __init__, no __getstate__ (parametrized modules refuse it)
    copies[id(module)] = clone
    if isinstance(module, kinds):
        found.append((name, clone))
    state = module.__dict__.copy()
    state["training"] = False
    prefix = name + "." if name else ""
    state["_modules"] = {child_name: None if child is None else _copy(child, prefix + child_name, copies, found, kinds)
                         for child_name, child in module._modules.items()}
    object.__setattr__(clone, "__dict__", state)  # not Module.__setattr__'s checks: 2x faster views
    return clone


# the key of our hook in a view module's own hook dictionary (torch's handles count up from 0), and
# where a view module keeps the forward its wrapper calls (so that setting a hook again replaces it)
_VIEW_HOOK_KEY = -1
_VIEW_FORWARD = "_fastinterp_view_forward"


def set_forward_hook(module: nn.Module, hook: Callable) -> None:
    """Run ``hook(module, args, output)`` after a view module's forward, as a forward hook would
    (a non-None return replaces the output), replacing the one set before, if any. The model's
    module never sees it, and nothing needs removing: the view is dropped after the call.

    When nothing else runs after the module's forward (no forward hook of its own, none global),
    the view module's ``forward`` is wrapped, so that the call keeps torch's fast path (no hook
    machinery per call); otherwise the view module gets its own hook dictionary: the model's
    hooks, then this one. Either way the hook sees what a forward hook registered last would."""
    state = module.__dict__
    if not state["_forward_hooks"] and not _global_forward_hooks:
        # no strong reference back to the module: a view that is dropped is freed at once, with
        # the outputs its hooks hold, not at the garbage collector's next cycle
        module_ref = weakref.ref(module)
        own = state.get(_VIEW_FORWARD, state.get("forward"))  # a forward set on the model's module itself
        class_forward = type(module).forward

        def watched(*args, **kwargs):
            view_module = module_ref()
            output = own(*args, **kwargs) if own is not None else class_forward(view_module, *args, **kwargs)
            replaced = hook(view_module, args, output)
            return output if replaced is None else replaced

        state[_VIEW_FORWARD] = own
        state["forward"] = watched
        return
    if _VIEW_FORWARD in state:  # wrapped by an earlier call (before a hook appeared): unwrap, run once
        own = state.pop(_VIEW_FORWARD)
        if own is None:
            del state["forward"]
        else:
            state["forward"] = own
    hooks = OrderedDict(state["_forward_hooks"])
    hooks[_VIEW_HOOK_KEY] = hook
    state["_forward_hooks"] = hooks


def runs_class_forward(module: nn.Module) -> bool:
    """True when calling the view ``module`` runs its class's ``forward`` on its arguments and
    nothing else that could change the output: no forward pre-hook or forward hook (its own or
    global) but :func:`set_forward_hook`'s, and no ``forward`` set on the instance. Then the
    output can be computed again from the arguments (``fastinterp.maps.capture``)."""
    state = module.__dict__
    own_forward = state.get(_VIEW_FORWARD) if _VIEW_FORWARD in state else state.get("forward")
    hooks = [key for key in state["_forward_hooks"] if key != _VIEW_HOOK_KEY]
    return (own_forward is None and not hooks and not state["_forward_pre_hooks"] and not _global_forward_hooks
            and not _global_forward_pre_hooks)


def add_forward_hook(module: nn.Module, hook: Callable) -> RemovableHandle:
    """``module.register_forward_hook(hook)`` for a module of an eval view, leaving the model's
    module (whose hook dictionaries the view's module shares until now) untouched."""
    for key in _FORWARD_HOOK_DICTS:
        if key in module.__dict__:
            module.__dict__[key] = module.__dict__[key].copy()
    return module.register_forward_hook(hook)


def add_forward_pre_hook(module: nn.Module, hook: Callable) -> RemovableHandle:
    """``module.register_forward_pre_hook(hook)`` for a module of an eval view, leaving the model's
    module untouched (as :func:`add_forward_hook`)."""
    for key in _FORWARD_PRE_HOOK_DICTS:
        if key in module.__dict__:
            module.__dict__[key] = module.__dict__[key].copy()
    return module.register_forward_pre_hook(hook)
