"""``cnnkit studio [PROJECT]``: the local web app to gather images, train, understand and fix a recognizer."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio",
        help="gather images, train, understand and fix a recognizer in the browser",
        description="Start the studio, a local web app, on a project folder: one sub-folder per class (what "
        "`cnnkit train --data PROJECT` reads), the studio's state in PROJECT/.cnnkit-studio/, its runs in "
        "PROJECT/runs/. Open the URL it prints (it carries the access token).",
    )
    p.add_argument("project", nargs="?", default=".", help="the project folder (made if missing; default: here)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.studio.server import run_studio

    run_studio(args.project, host=args.host, port=args.port)
    return 0
