"""What every subcommand shares: the console it prints to."""

from __future__ import annotations

from rich.console import Console

__all__ = ["console"]

console = Console(highlight=False)
