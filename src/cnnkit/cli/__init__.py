"""The ``cnnkit`` command: each subcommand parses its flags, calls one library function, prints.

One module per subcommand (or family of them), each with ``add_parser(subparsers)``; the
parser it adds sets ``run``, a function of the parsed arguments returning the exit status.
User mistakes (:class:`~cnnkit.errors.CnnkitError`) print one line and exit 1; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cnnkit import __version__
from cnnkit._suggest import nearest
from cnnkit.cli import (
    check_data,
    evaluate,
    explain,
    export,
    listings,
    lr_find,
    predict,
    report,
    serve,
    show_batch,
    studio,
    train,
    tune,
)
from cnnkit.cli._options import LazyParser, SuggestingParser
from cnnkit.errors import CnnkitError

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (train, tune, lr_find, evaluate, predict, explain, report, show_batch, export, serve, studio, listings,
               check_data)  # fmt: skip


class _Parser(SuggestingParser):
    """The top-level parser: an unknown flag is refused with the subcommand's nearest flag (``--modle``)."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._subcommands().get(getattr(parsed, "command", None) or "", self)
            flags = [s for action in command._actions for s in action.option_strings if s.startswith("--")]
            typed = [extra.split("=")[0] for extra in extras if extra.startswith("-")]
            close = [flag for word in typed for flag in nearest(word, flags, 1)]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
        actions = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(actions[0].choices) if actions else {}


def build_parser(*, lazy: bool = False) -> argparse.ArgumentParser:
    """The ``cnnkit`` parser; ``lazy``: a subcommand's arguments are added only when it is used
    (what ``main`` does, so ``cnnkit --help`` does not import torch for ``train``'s flags)."""
    parser = _Parser(prog="cnnkit", description="Image recognition with convolutional neural networks.")
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=LazyParser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    if not lazy:
        for command in sub.choices.values():
            command.complete()
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cnnkit`` command line; return the exit status."""
    parser = build_parser(lazy=True)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except CnnkitError as e:
        print(f"cnnkit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cnnkit predict ... | head`
        return 0
