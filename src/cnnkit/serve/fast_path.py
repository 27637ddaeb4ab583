"""``POST /v1/predict`` answered without FastAPI's per-request machinery, the same answer for less.

A prediction of a small model costs the server a few hundred microseconds of Python under one
GIL, and FastAPI's handling of the request was a large share of it: its exception and exit-stack
middlewares, routing through every route, a ``Request``, and the dependency solver validating
``top_k`` and ``include_input`` with pydantic (``benchmarks/RESULTS.md``, issue 20 item 2).
:class:`PredictFastPath` sits just inside the limits (body size, admission) and the metrics, so
those see every request as before, and answers a POST to ``/v1/predict`` itself when its query is
one it can read exactly as FastAPI would (no parameters, or ``top_k`` as plain digits and
``include_input`` as true/false/1/0, each at most once, nothing percent-encoded). Any other query
goes on to the FastAPI route, which stays the reference: it gives FastAPI's own validation errors
and is what the OpenAPI docs describe. Both call :func:`predict_response`, so what is answered,
and every error of the body, the images and the limits, is decided in one place.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cnnkit.serve.batching import BatcherStopped
from cnnkit.serve.limits import ApiError, check_top_k, deadline, error_response
from cnnkit.serve.service import ModelService
from cnnkit.serve.uploads import read_uploads

__all__ = ["DEFAULT_TOP_K", "PredictFastPath", "not_ready", "plain_query", "predict_response"]

DEFAULT_TOP_K = 5  # the route's default (app.py) and the fast path's alike
PREDICT_PATH = "/v1/predict"
_BOOLEANS = {b"true": True, b"false": False, b"1": True, b"0": False}  # a subset of what pydantic reads as bool
_MAX_DIGITS = 6  # top_k is at most max_top_k; a longer number goes to FastAPI, which says what is wrong


def not_ready(error: BatcherStopped) -> ApiError:
    """The answer to a request that reached a stopped batcher (the server is stopping)."""
    return ApiError(503, "not_ready", str(error), {"Retry-After": "1"})


async def predict_response(service: ModelService, request: Request, top_k: int, include_input: bool) -> JSONResponse:
    """The answer of ``POST /v1/predict``; raises :class:`ApiError` or :class:`BatcherStopped` for its errors."""
    check_top_k(top_k, service.config.max_top_k)
    async with deadline(service.config.timeout_s):
        answer = await service.predict(lambda: read_uploads(request, service.config.max_images), top_k, include_input)
    return JSONResponse(answer)


def plain_query(query_string: bytes) -> tuple[int, bool] | None:
    """``(top_k, include_input)`` from a query FastAPI would read the same way; None for any other query.

    Unknown parameters are ignored, as FastAPI ignores them. None (FastAPI decides) for a
    repeated parameter, an empty or percent-encoded value, a ``top_k`` that is not plain digits
    (0 too: FastAPI's ``ge=1`` message), and an ``include_input`` outside true/false/1/0.
    """
    top_k, include_input = DEFAULT_TOP_K, False
    if not query_string:
        return top_k, include_input
    if b"%" in query_string or b"+" in query_string:  # encoded names or values: leave decoding to FastAPI
        return None
    seen: set[bytes] = set()
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name not in (b"top_k", b"include_input"):
            continue
        if name in seen or not value:
            return None
        seen.add(name)
        if name == b"top_k":
            if not (value.isdigit() and len(value) <= _MAX_DIGITS) or int(value) < 1:
                return None
            top_k = int(value)
        else:
            flag = _BOOLEANS.get(value.lower())
            if flag is None:
                return None
            include_input = flag
    return top_k, include_input


class PredictFastPath:
    """ASGI middleware: answer the plain ``POST /v1/predict`` requests, pass everything else on.

    Args:
        app: the ASGI app inside (FastAPI's exception middleware and router).
        service: the model service the route calls.
    """

    def __init__(self, app: ASGIApp, service: ModelService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PREDICT_PATH:
            await self.app(scope, receive, send)
            return
        query = plain_query(scope["query_string"])
        if query is None:
            await self.app(scope, receive, send)
            return
        # The errors FastAPI's handlers answer for this route (app.py); anything else is a bug,
        # raised on to the outermost handler, which answers 500 and logs it, as for any route.
        try:
            response = await predict_response(self.service, Request(scope, receive), *query)
        except ApiError as e:
            response = error_response(e)
        except BatcherStopped as e:
            response = error_response(not_ready(e))
        await response(scope, receive, send)
