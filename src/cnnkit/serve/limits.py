"""Limits on what a request may cost, each answered with its own status and a JSON error body.

- :class:`BodyLimitMiddleware`: 413 for a body larger than the limit, decided from
  ``Content-Length`` before any of it is read, and by counting the bytes as they stream in
  (chunked uploads, or a client that lies about the length).
- :class:`AdmissionMiddleware`: at most ``max_in_flight`` recognition requests at once; the next
  one is answered 503 at once, before its body is read, so overload never queues up.
- :func:`deadline`: a request that takes longer than its time budget gets 504.

Every error has the body ``{"detail": "<what went wrong, for a person>", "code": "<for a program>"}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "Admission",
    "AdmissionMiddleware",
    "ApiError",
    "BodyLimitMiddleware",
    "check_top_k",
    "deadline",
    "describe",
    "error_response",
]


class ApiError(Exception):
    """An error answered with ``status`` and a JSON body; never a 500."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"detail": error.detail, "code": error.code}, status_code=error.status, headers=error.headers)


async def _send_error(send: Send, error: ApiError) -> None:
    """Answer from inside an ASGI middleware, without touching the request body."""
    body = json.dumps({"detail": error.detail, "code": error.code}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _mib(n: int) -> str:
    return f"{n / 2**20:.3g} MiB" if n >= 2**20 else f"{n:,} bytes"


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, without buffering them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(413, "body_too_large", f"the request body is larger than the limit of {_mib(self.max_bytes)}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _send_error(send, ApiError(400, "bad_request", "Content-Length is not a number"))
                return
            if int(length) > self.max_bytes:
                await _send_error(send, self._too_large())
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()  # surfaces in the route that reads the body
            return message

        await self.app(scope, counted_receive, send)


class Admission:
    """The count of recognition requests in flight (and of those refused), kept by the middleware."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.refused = 0


class AdmissionMiddleware:
    """Admit at most ``admission.max_in_flight`` POSTs to ``paths`` at once; 503 the rest at once."""

    def __init__(self, app: ASGIApp, admission: Admission, paths: Iterable[str]) -> None:
        self.app = app
        self.admission = admission
        self.paths = tuple(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        admission = self.admission
        if admission.in_flight >= admission.max_in_flight:
            admission.refused += 1
            detail = f"the server is busy ({admission.max_in_flight} requests in flight); retry shortly"
            await _send_error(send, ApiError(503, "overloaded", detail, {"Retry-After": "1"}))
            return
        admission.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            admission.in_flight -= 1


def check_top_k(top_k: int, max_top_k: int) -> None:
    """422 for a ``top_k`` over the server's ``max_top_k`` (the route itself refuses one below 1)."""
    if top_k > max_top_k:
        raise ApiError(422, "bad_parameter", f"top_k must be at most {max_top_k}")


@asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """Raise a 504 :class:`ApiError` if the body of the ``async with`` takes longer than ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise ApiError(504, "timeout", f"the request took longer than its limit of {seconds:g} s") from None


def describe(limits: Any) -> dict[str, Any]:
    """The limits a client should know about, for the model card."""
    return {
        "max_body_bytes": limits.max_body_bytes,
        "max_pixels": limits.max_pixels,
        "max_images": limits.max_images,
        "max_top_k": limits.max_top_k,
        "max_in_flight": limits.max_in_flight,
        "timeout_s": limits.timeout_s,
    }
