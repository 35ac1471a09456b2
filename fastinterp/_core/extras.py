"""Optional dependencies, each behind the extra that installs it: one check that names the right
``pip install "fastinterp[extra]"``. Imports nothing heavy (the ONNX Runtime backend uses it
without torch)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, purpose: str, alternative: str = "") -> ModuleType:
    """``import module``, or ModuleNotFoundError: "<purpose> with <module>, which is not installed:
    pip install "fastinterp[<extra>]"<alternative>" (``purpose`` says who needs it, e.g.
    "fastinterp evaluate draws its figures")."""
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f'{purpose} with {module}, which is not installed: pip install '
                                  f'"fastinterp[{extra}]"{alternative}', name=module)
    return importlib.import_module(module)
