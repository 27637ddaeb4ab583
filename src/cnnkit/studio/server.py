"""Run the studio: bind the port (a free one by default), print the URL with its token, serve until Ctrl-C."""

from __future__ import annotations

import os
import socket
import sys

from cnnkit.errors import ConfigError
from cnnkit.studio.security import LOOPBACK, new_token

__all__ = ["run_studio"]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port, or leave it out "
                          f"for a free one") from None  # fmt: skip
    sock.listen(128)
    return sock


def run_studio(project: str | os.PathLike = ".", *, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve the studio on ``project``; ``port`` 0 takes a free one. The URL printed carries the token."""
    import uvicorn

    from cnnkit.studio.app import create_app

    token = os.environ.get("CNNKIT_STUDIO_TOKEN") or new_token()
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    hosts = LOOPBACK if host in LOOPBACK else (*LOOPBACK, host, socket.gethostname())
    app = create_app(project, token, hosts=hosts)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    print(f"cnnkit studio on {app.state.project.root}", flush=True)
    print(f"open http://{shown}:{port}/?token={token}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    print("studio stopped", file=sys.stderr)
