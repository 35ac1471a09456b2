"""Names of a package imported on first use (PEP 562): how ``fastinterp.runtime`` and
``fastinterp.export`` expose their public names without importing torch until one is used (the
ONNX Runtime backend runs without it). Imports nothing heavy."""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["lazy_names"]


def lazy_names(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the module that
    defines it, imported when the name is first asked for."""

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(names[name]), name)

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(names))

    return __getattr__, __dir__
