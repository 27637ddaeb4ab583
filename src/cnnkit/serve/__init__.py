"""Serving a model over HTTP: the REST API, dynamic batching, limits, and the page at ``/``.

``cnnkit serve MODEL_OR_RUN`` runs :func:`run_server`; :func:`create_app` gives the FastAPI
app for any ASGI server or for tests. FastAPI and torch load on first use, so the CLI's
parser stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServeConfig", "create_app", "run_server"]

_LAZY = {"ServeConfig": "cnnkit.serve.config", "create_app": "cnnkit.serve.app", "run_server": "cnnkit.serve.server"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnkit.serve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
