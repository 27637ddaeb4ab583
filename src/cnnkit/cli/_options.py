"""Command-line flags generated from a config dataclass (:class:`~cnnkit.recipe.config.TrainConfig`).

One flag per field: ``--field-name VALUE`` of the field's type, ``--name`` for a bool that is
off by default, ``--no-name`` for one that is on, or what the field's
:class:`~cnnkit.recipe.config.Option` says. Every flag defaults to None, "not given", so a
command can tell the options given on its command line from the defaults (and lay them over a
``--config`` file, or refuse them with ``--resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnkit.recipe.config import Option

from cnnkit._flags import command_line, field_flags, flag_of, option_fields
from cnnkit._suggest import did_you_mean

__all__ = ["LazyParser", "SuggestingParser", "add_options", "command_line", "flag_of", "given_options"]


class SuggestingParser(argparse.ArgumentParser):
    """argparse's parser whose refusal of a value outside the choices names the nearest one."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own check and message, with the nearest choice: `--optimizer adma` -> "did you mean 'adam'?"
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            listed = ", ".join(map(repr, choices))
            hint = did_you_mean(str(value), choices, 1)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {listed}){hint}")


class LazyParser(SuggestingParser):
    """A subcommand's parser that adds its arguments (``arguments(parser)``) when it is first used.

    ``cnnkit train``'s flags are generated from :class:`~cnnkit.recipe.config.TrainConfig`, and
    importing it imports torch (seconds on a cold start): ``cnnkit --help``, ``--version`` and the
    other subcommands should not pay for that. Parsing the subcommand, or printing its help or
    usage, adds the arguments first; :func:`cnnkit.cli.build_parser` completes every parser unless
    asked to stay lazy, so what a caller inspects is always the whole parser.
    """

    def __init__(self, *args: Any, arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self._pending = arguments

    def complete(self) -> None:
        """Add the deferred arguments now (once)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        self.complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()

    def format_help(self) -> str:
        self.complete()
        return super().format_help()


def _text_parser(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its ``ValueError`` becomes argparse's one-line usage error, message kept."""

    def parse_text(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse_text.__name__ = parse.__name__  # argparse names the type in some of its messages
    return parse_text


def _help(f: dataclasses.Field, spec: Option) -> str:
    """The help text, with the default when it is a value (None and bools say it in their own words)."""
    shown = f.default is not None and not isinstance(f.default, bool) and spec.const is None
    return f"{spec.help} (default: {f.default})".lstrip() if shown else spec.help


def _argument(f: dataclasses.Field) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The flags and ``add_argument`` settings of field ``f``; None stays the default: "not given"."""
    from cnnkit.recipe.config import field_type, option_of  # the config imports torch: only when flags are made

    spec = option_of(f)
    value_type, _ = field_type(f)
    settings: dict[str, Any] = {"dest": f.name, "default": None, "help": _help(f, spec)}
    if spec.const is not None:  # a switch that stores a value (-q: verbose=0)
        settings.update(action="store_const", const=spec.const)
    elif value_type is bool:  # --name turns on what is off by default, --no-name turns off what is on
        settings.update(action="store_false" if f.default is True else "store_true")
    else:
        parse = _text_parser(spec.parse) if spec.parse else value_type
        settings.update(type=parse, choices=spec.choices, metavar=spec.metavar)
    return field_flags(f, spec), settings


def add_options(parser: argparse.ArgumentParser, config_class: type,
                names: Collection[str] | None = None) -> None:  # fmt: skip
    """Add a flag to ``parser`` for each field of ``config_class`` (only those in ``names`` when given)."""
    from cnnkit.recipe.config import option_of

    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in option_fields(config_class, names):
        flags, settings = _argument(f)
        group = option_of(f).group
        if group is not None and group not in groups:
            groups[group] = parser.add_argument_group(group)
        (groups[group] if group is not None else parser).add_argument(*flags, **settings)


def given_options(args: argparse.Namespace, config_class: type,
                  names: Collection[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The options that the command line gave (field name -> value), in field order."""
    return {f.name: getattr(args, f.name) for f in option_fields(config_class, names)
            if getattr(args, f.name, None) is not None}  # fmt: skip
