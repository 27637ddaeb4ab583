"""How a config's options are spelt on a command line: the flag of each field, and a whole command's flags.

The one spelling both surfaces use: :mod:`cnnkit.cli._options` makes ``cnnkit train``'s parser from
it, and ``cnnkit studio`` shows, for each training it runs, the command that repeats it. The config
itself (:mod:`cnnkit.recipe.config`, which imports torch) is imported only when a flag is spelt.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnkit.recipe.config import Option

__all__ = ["command_line", "field_flags", "flag_of", "option_fields"]


def option_fields(config_class: type, names: Collection[str] | None) -> list[dataclasses.Field]:
    known = dataclasses.fields(config_class)
    if names is None:
        return list(known)
    unknown = set(names) - {f.name for f in known}
    if unknown:
        raise ValueError(f"{config_class.__name__} has no option(s) {', '.join(sorted(unknown))}")
    return [f for f in known if f.name in names]


def field_flags(f: dataclasses.Field, spec: Option) -> tuple[str, ...]:
    if spec.flags:
        return spec.flags
    name = f.name.replace("_", "-")
    return (f"--no-{name}",) if f.default is True else (f"--{name}",)


def flag_of(config_class: type, name: str) -> str:
    """The flag a user types for option ``name`` of ``config_class`` (its long form)."""
    from cnnkit.recipe.config import option_of

    (f,) = option_fields(config_class, [name])
    return field_flags(f, option_of(f))[-1]


def command_line(config_class: type, options: dict[str, Any]) -> str:
    """The flags that give ``options`` (field name -> value, e.g. :func:`given_options`), as a user types them.

    ``cnnkit lr-find --model resnet9 --data photos/`` ends with the ``cnnkit train`` command to
    run next: the same options, spelt by the same declaration that made the flags.
    """
    from cnnkit.recipe.config import option_of

    fields = {f.name: f for f in option_fields(config_class, list(options))}
    words: list[str] = []
    for name, value in options.items():
        f = fields[name]
        flag = field_flags(f, option_of(f))[-1]
        # A switch (a bool, or a flag that stores a constant) is its flag alone.
        words += [flag] if isinstance(value, bool) or option_of(f).const is not None else [flag, str(value)]
    return shlex.join(words)
