"""The user's CNN from a specification string, as ``fastinterp fit --cnn SPEC [--weights FILE]``
takes it:

    path/to/cnn.safetensors        a zoo checkpoint (``fastinterp zoo``; its metadata rebuilds it)
    digits-mobilenet_v3_small      a shipped CNN (``fastinterp.pretrained.names("cnn")``; "demo": the demo's)
    torchvision:NAME               ``torchvision.models.get_model(NAME, weights=None, num_classes=N)``
    path/to/file.py:factory        a callable in a Python file, returning an ``nn.Module``
    package.module:factory         the same from an importable module

``weights``: a state dict, ``.safetensors`` or ``.pt``/``.pth`` (read with ``weights_only=True``:
no code runs), optionally under a "state_dict" or "model" key (Lightning / common checkpoints),
with a "module." prefix (DataParallel) removed. Every error is one line naming the argument and
what to do instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_cnn", "load_weights", "read_state_dict"]

_SPEC_FORMS = ("a zoo checkpoint (.safetensors from `fastinterp zoo`), a shipped CNN name, torchvision:NAME, "
               "path/to/file.py:factory or package.module:factory")



def _refuse_archives(path: Path, argument: str) -> None:
    """TorchScript and ExportedProgram archives are zip files with code in them: refused, clearly."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith(("constants.pkl", "/code/", ".py")) or "/code/" in name for name in names):
        raise ValueError(f"{argument}: {path} is a TorchScript archive; a scripted module runs no Python hooks, so "
                         "its layers cannot be explained: save the eager model's state_dict() and pass --cnn with "
                         "the architecture")
    if any(name.endswith(("serialized_exported_program.json", "models/model.json")) for name in names):
        raise ValueError(f"{argument}: {path} is a torch.export ExportedProgram; save the eager model's state_dict() "
                         "instead and pass --cnn with the architecture")


def read_state_dict(path: str | Path, argument: str = "weights") -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (.safetensors, or .pt/.pth/.bin through ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{argument}: {path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{argument}: {path} is not a readable safetensors file ({error})") from None
    _refuse_archives(path, argument)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip errors of many kinds: one line for each
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{argument}: {path} is not a state dict torch.load can read with weights_only=True "
                         f"({first[:160]}); save model.state_dict() with torch.save or safetensors") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if isinstance(state, nn.Module):  # cannot happen with weights_only, but say it plainly if it does
        raise ValueError(f"{argument}: {path} holds a whole module; save model.state_dict() instead")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{argument}: {path} does not hold a state dict (a dict of tensors); save model.state_dict()")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path, argument: str = "--weights") -> None:
    """Load the state dict at ``path`` into ``model``: every key must fit (missing, unexpected and
    mis-shaped keys are one error line naming a few of each)."""
    state = read_state_dict(path, argument)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ValueError(f"{argument}: {path} does not fit {type(model).__name__}: {'; '.join(parts)}; is it the "
                         "state dict of this architecture (and --num-classes)?")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def _factory(spec: str, argument: str):
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"{argument}: {path} does not exist (from {spec!r}; expected path/to/file.py:factory)")
        name = f"fastinterp_user_cnn_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses / pickling of the module's classes look it up
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[name]
            raise ValueError(f"{argument}: running {path} failed ({type(error).__name__}: {error})") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise ValueError(f"{argument}: cannot import {target!r} ({error}); expected {_SPEC_FORMS}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{argument}: {target} has no callable {attr!r}")
    return factory


def load_cnn(spec: str | nn.Module, weights: str | Path | None = None, num_classes: int | None = None, *,
             argument: str = "cnn") -> nn.Module:
    """The CNN ``spec`` names (see the module doc), with ``weights`` loaded, in eval mode on the
    CPU. An ``nn.Module`` is returned as it is, its mode untouched (``weights`` loaded into it, if
    given: the one change, asked for).

    Args:
        num_classes: outputs of a ``torchvision:NAME`` model (required there; elsewhere the factory
            or checkpoint decides, and a given value must agree).
    """
    from fastinterp._core.validation import check_model, declared_outputs

    if isinstance(spec, nn.Module):
        model = check_model(spec)
    elif not isinstance(spec, str) or not spec:
        raise TypeError(f"{argument}: expected an nn.Module or a string, {_SPEC_FORMS}; got {type(spec).__name__}")
    else:
        model = _build(spec, weights, num_classes, argument)
    if weights is not None and (isinstance(spec, nn.Module) or not _is_checkpoint(spec)):
        load_weights(model, weights, "--weights" if argument == "--cnn" else "weights")
    if num_classes is not None:
        outputs = declared_outputs(model)
        if outputs is not None and outputs != num_classes:
            raise ValueError(f"num_classes: {num_classes} given, but the CNN has {outputs} outputs")
    return model if isinstance(spec, nn.Module) else model.eval()  # the user's module keeps its mode


def _is_checkpoint(spec: str) -> bool:
    from fastinterp import pretrained

    return pretrained.cnn_path(spec) is not None or spec.endswith(".safetensors")


def _build(spec: str, weights: Any, num_classes: int | None, argument: str) -> nn.Module:
    from fastinterp import pretrained

    if _is_checkpoint(spec):
        from fastinterp.datasets.zoo import load_cnn as load_zoo_cnn

        path = pretrained.cnn_path(spec) or Path(spec)
        if weights is not None:
            raise ValueError(f"{argument}: {spec} is a zoo checkpoint with its own weights; leave out --weights")
        if not path.is_file():
            raise ValueError(f"{argument}: {path} does not exist; expected {_SPEC_FORMS}")
        try:
            return load_zoo_cnn(path)[0]
        except ValueError as error:
            raise ValueError(f"{argument}: {error}; a plain state dict goes to --weights, with --cnn naming the "
                             "architecture (torchvision:NAME or file.py:factory)") from None
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"{argument}: torchvision has no classification model {name!r} (e.g. resnet18, "
                             "mobilenet_v2, efficientnet_b0)")
        if num_classes is None:
            raise ValueError(f"num_classes: {spec} needs --num-classes (the outputs of the model the weights are for)")
        extra = {"aux_logits": False, "init_weights": False} if name in ("inception_v3", "googlenet") else {}
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)
    if ":" in spec:
        factory = _factory(spec, argument)
        try:
            model = factory()
        except Exception as error:  # the user's code: its error, as one line naming the spec
            raise ValueError(f"{argument}: calling {spec} failed ({type(error).__name__}: {error})") from None
        if not isinstance(model, nn.Module):
            raise ValueError(f"{argument}: {spec} returned a {type(model).__name__}, not an nn.Module")
        return model
    path = Path(spec)
    if path.suffix in (".pt", ".pth", ".bin") and path.is_file():
        raise ValueError(f"{argument}: {spec} is a weights file; pass the architecture as --cnn (torchvision:NAME or "
                         f"file.py:factory) and the file as --weights")
    import torchvision

    if spec in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"{argument}: {spec!r} is not a file; for torchvision's architecture pass "
                         f"torchvision:{spec} (with --num-classes and --weights)")
    raise ValueError(f"{argument}: cannot tell what {spec!r} is; expected {_SPEC_FORMS}")
