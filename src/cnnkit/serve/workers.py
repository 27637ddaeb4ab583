"""Several worker processes on one port, each with a listening socket of its own (``SO_REUSEPORT``).

uvicorn's ``--workers`` binds one socket in the parent and shares it: whichever worker's event
loop wakes first accepts every connection waiting (asyncio accepts up to 100 at a wake-up). With
32 clients connecting at once to ``cnnkit serve --workers 2``, all 32 went to one worker in two
tries of three and 21:11 in the third (``ss -tnp``), so one worker served while the other idled,
and the requests on the busy one made the p99. With a socket per worker, in one ``SO_REUSEPORT``
group, the Linux kernel spreads new connections over the listening sockets by a hash of their
addresses. :class:`SocketPerWorker` is uvicorn's own supervisor (signals, health checks, restarts)
with that one change; elsewhere than Linux (where ``SO_REUSEPORT`` does not spread connections)
:func:`run_workers` runs uvicorn's as it is.
"""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess

__all__ = ["SocketPerWorker", "run_workers"]

log = logging.getLogger("uvicorn.error")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` in the port's ``SO_REUSEPORT`` group (its worker listens on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn tells them apart
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class SocketPerWorker(Multiprocess):
    """uvicorn's multiprocess supervisor, handing each worker it starts a socket of its own.

    uvicorn's supervisor gives ``self.sockets`` to every worker it starts (at first, and in place
    of one that died); here each read of it binds one more socket on the port, so every worker,
    a replacement too, listens on its own. A port of 0 is chosen by the first bind and kept.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config, sockets=[])
        first = listening_socket(config.host, config.port)
        self.port = first.getsockname()[1]
        self._unused = [first]
        shown = f"[{config.host}]" if ":" in config.host else config.host
        log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, self.port)  # as uvicorn says it

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._unused.pop() if self._unused else listening_socket(self.config.host, self.port)]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:  # uvicorn's __init__ sets it; each read makes one
        pass


def run_workers(app: str, workers: int, **options: object) -> None:
    """Run ``workers`` processes of the app factory ``app`` (an import string) on ``options``' host and port."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(app, factory=True, workers=workers, **options)
        return
    config = uvicorn.Config(app, factory=True, workers=workers, **options)  # sets up uvicorn's logging
    SocketPerWorker(config).run()
