"""Who may drive the studio: the person holding its token, from a page the studio itself served.

As Jupyter does, the studio prints a URL with a random token; every request must carry it (the
``token`` query parameter, which the first page load trades for a cookie, an ``X-Studio-Token``
header, or that cookie), else 403. The ``Host`` header must name the loopback address the studio
listens on (a DNS-rebinding page names its own host) and an ``Origin`` header, when a browser sends
one, must be the studio's own, port included (a page elsewhere, even another local app, cannot post to
it: CSRF). The cookie is ``SameSite=Strict`` and ``HttpOnly``.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["COOKIE", "HEADER", "TokenGuard", "new_token"]

COOKIE = "cnnkit_studio"
HEADER = "x-studio-token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _host_name(host: str) -> str:
    """``127.0.0.1:8765`` -> ``127.0.0.1``; ``[::1]:80`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail, "code": "forbidden"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """ASGI middleware: 403 for a request without the token, for a foreign ``Host`` or a foreign ``Origin``."""

    def __init__(self, app: ASGIApp, token: str, hosts: Iterable[str] = LOOPBACK) -> None:
        self.app = app
        self.token = token
        self.hosts = {h.lower() for h in hosts}

    def _given(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[str | None, bool]:
        """(the token the request carries, whether it came in the query string)."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return query["token"][0], True
        if HEADER.encode() in headers:
            return headers[HEADER.encode()].decode("latin-1"), False
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value, False
        return None, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host_header = headers.get(b"host", b"").decode("latin-1").lower()
        host = _host_name(host_header)
        if host not in self.hosts:
            await _refuse(send, f"the studio answers requests for {', '.join(sorted(self.hosts))} only")
            return
        origin = headers.get(b"origin")
        if origin is not None:
            # The page's origin is the studio's own: its host and its port (another local app on another
            # port is the same *site* for cookies, so the port must match too).
            parts = urlsplit(origin.decode("latin-1"))
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != host_header:
                await _refuse(send, "requests from other sites are refused")
                return
        given, in_query = self._given(scope, headers)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            await _refuse(send, "open the studio with the URL (and its token) that `cnnkit studio` printed")
            return
        if not in_query:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
