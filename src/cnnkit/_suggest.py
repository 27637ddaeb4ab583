"""``did you mean ...?``: the nearest known names to a user's misspelt one."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "nearest"]


def nearest(word: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` names of ``known`` closest to ``word``, best first, compared case-insensitively."""
    by_lower = {name.lower(): name for name in known}
    return [by_lower[name] for name in difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)]


def did_you_mean(word: str, known: Iterable[str], n: int = 3) -> str:
    """``" (did you mean 'a' or 'b'?)"`` for the names of ``known`` closest to ``word``; ``""`` when none is close."""
    close = nearest(word, known, n)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
