"""Training: the engine (``loop.fit``), Keras-style optimizers, losses and callbacks, and runs.

``train(TrainConfig(...))`` is what ``cnnkit train`` calls: data, model, engine, run folder.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "callbacks", "fit", "losses", "optimizers", "train"]


def __getattr__(name: str) -> Any:
    # Imported lazily: the run-level API needs cnnkit.models, which itself uses the engine.
    if name in ("train", "TrainResult"):
        from cnnkit.train import run

        return getattr(run, name)
    if name == "fit":
        from cnnkit.train.loop import fit

        return fit
    if name in ("callbacks", "losses", "optimizers"):
        import importlib

        return importlib.import_module(f"cnnkit.train.{name}")
    raise AttributeError(f"module 'cnnkit.train' has no attribute {name!r}")
