"""Keras' ``model.summary()`` table, printed with rich: layer (type), output shape, parameters, totals.

The rows come from the model (``summary_rows()``: one per top-level block, or per graph node
with Keras 3's "Connected to" column for a functional model); this module only lays them out.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_summary"]


def print_summary(model: Any, print_fn: Any = None) -> None:
    """Print ``model``'s summary as Keras does, to the terminal or line by line to ``print_fn``."""
    table = Table(title=f'Model: "{model.name}"', title_justify="left")
    table.add_column("Layer (type)")
    table.add_column("Output Shape")
    table.add_column("Param #", justify="right")
    rows = model.summary_rows()
    if rows and len(rows[0]) == 5:  # a graph: Keras 3's "Connected to" column
        table.add_column("Connected to")
    for name, kind, shape, params, *connected in rows:
        count = params if isinstance(params, str) else f"{params:,}"
        table.add_row(f"{name} ({kind})", shape, count, *(c.replace(", ", ",\n") for c in connected))
    total = model.count_params()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines = [
        f" {label} params: {count:,} ({_human_bytes(count * 4)})"
        for label, count in (("Total", total), ("Trainable", trainable), ("Non-trainable", total - trainable))
    ]
    if print_fn is None:
        console = Console(highlight=False, markup=False)  # layer names are the user's, never styles
        console.print(table)
        for line in lines:
            console.print(line)
        return
    console = Console(width=100, highlight=False, markup=False, file=io.StringIO(), record=True)
    console.print(table)
    for line in [*console.export_text().splitlines(), *lines]:
        print_fn(line)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"
