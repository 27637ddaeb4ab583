"""A package's public names, each loaded from its module on first use (PEP 562's module ``__getattr__``).

Several packages keep their ``__init__`` light so that a command pays only for what it uses
(``cnnkit train --help`` no torch, ``cnnkit evaluate`` no matplotlib, ``cnnkit predict`` no onnx).
Each declares ``name -> module`` and sets ``__getattr__ = lazy_names(__name__, table)``; the same
names are imported under ``TYPE_CHECKING`` for type checkers and for the import graph
``tests/test_architecture.py`` checks.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``table[name]`` is the module that has ``name``, or the
    submodule ``package.name`` itself; a loaded name is kept in the package, so it is looked up once."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in table:  # a submodule not in the table (``from package import x``) imports as usual
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(table[name])
        value = module if table[name] == f"{package}.{name}" else getattr(module, name)
        namespace[name] = value
        return value

    return __getattr__
