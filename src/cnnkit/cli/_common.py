"""What every subcommand shares: the console it prints to."""

from __future__ import annotations

from rich.console import Console

__all__ = ["console"]


def _console() -> Console:
    """The commands' console.

    What it prints is taken literally (``markup=False``): paths and class names are the user's,
    and ``photos [2024]`` is a folder, not a style (a line that wants one passes a ``Text``).
    Lines are never broken to fit (``soft_wrap``): a printed path stays one piece to copy or
    parse. Into a pipe or a file there is no width to fit, so tables print at their natural
    width and no column is cut (``| grep``, ``> out.txt``).
    """
    settings = {"highlight": False, "markup": False, "soft_wrap": True}
    terminal = Console(**settings)
    return terminal if terminal.is_terminal else Console(**settings, width=100_000)


console = _console()
