"""The HTTP API and the page: ``create_app(model)`` is a FastAPI app ready for uvicorn.

Routes only parse and call :class:`~cnnkit.serve.service.ModelService`; the limits live in
:mod:`cnnkit.serve.limits`, reading uploads in :mod:`cnnkit.serve.uploads`. The model is
fixed when the app is made: no request can name a model, a file path or a URL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnkit import __version__
from cnnkit.explain import DEFAULT_METHOD
from cnnkit.models import Model
from cnnkit.serve import schemas
from cnnkit.serve.batching import BatcherStopped
from cnnkit.serve.config import ServeConfig
from cnnkit.serve.fast_path import DEFAULT_TOP_K, PredictFastPath, not_ready, predict_response
from cnnkit.serve.inside import inside_router
from cnnkit.serve.limits import (
    AdmissionMiddleware,
    ApiError,
    BodyLimitMiddleware,
    check_top_k,
    deadline,
    error_response,
)
from cnnkit.serve.metrics import CONTENT_TYPE_LATEST, MetricsMiddleware
from cnnkit.serve.service import ModelService
from cnnkit.serve.uploads import read_uploads

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own lines

# The page loads nothing from elsewhere; say so to the browser.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "images as files of a multipart form (any field name), or one image as the raw body",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            **{t: IMAGE_BODY for t in ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif")},
            "application/octet-stream": IMAGE_BODY,
        },
    }
}
ERRORS = {
    status: {"model": schemas.ErrorBody, "description": text}
    for status, text in {
        413: "body, image (pixels) or number of images over the limit",
        415: "not an image, or a body type that is not an image",
        422: "no image, a damaged image, or a bad parameter",
        503: "too many requests in flight, or not ready",
        504: "the request took longer than its deadline",
    }.items()
}


def create_app(model: Model | str | os.PathLike, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving ``model`` (a loaded model, a model file or a run folder)."""
    config = config or ServeConfig()
    service = ModelService.load(model, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        name, classes, runtime = service.model.name, len(service.class_names), service.card()["runtime"]
        log.info("model %r ready: %d classes, input %s, served by %s", name, classes, service.input_shape, runtime)
        yield
        service.stop()  # after uvicorn has drained the requests in flight

    # FastAPIOffline is FastAPI with /docs (Swagger UI) and /redoc served from its own package
    # instead of a CDN: the API's documentation works where the page does, offline too.
    app = FastAPIOffline(
        title=f"cnnkit: {service.model.name}",
        version=__version__,
        description="Image recognition with a convolutional neural network. The page is at `/`.",
        lifespan=lifespan,
    )
    app.state.service = service
    # Innermost of ours: POST /v1/predict answered without FastAPI's request machinery, inside the
    # limits and the metrics, so those see it as any other request (fast_path.py says why).
    app.add_middleware(PredictFastPath, service=service)
    app.add_middleware(
        AdmissionMiddleware, admission=service.admission, paths=("/v1/predict", "/v1/explain", "/v1/inside")
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)  # before anything reads
    # Outermost: every request is counted, the ones the limits above refuse too.
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, routes=app.routes)
    _add_error_handlers(app)
    _add_routes(app, service)
    docs = {"openapi_extra": UPLOAD_DOC, "responses": ERRORS}
    app.include_router(inside_router(service, page=STATIC / "inside.html", page_headers=PAGE_HEADERS, docs=docs))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_routes(app: FastAPI, service: ModelService) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)  # what a browser asks for when a page names no icon
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.post(
        "/v1/predict",
        response_model=schemas.PredictAnswer,
        responses=ERRORS,
        openapi_extra=UPLOAD_DOC,
        summary="Top-k classes of one or more images",
    )
    async def predict(
        request: Request,
        top_k: int = Query(DEFAULT_TOP_K, ge=1, description="how many classes to answer per image"),
        include_input: bool = Query(False, description="also answer each image as the model saw it (PNG)"),
    ) -> JSONResponse:
        return await predict_response(service, request, top_k, include_input)  # as the fast path answers

    @app.post(
        "/v1/explain",
        response_model=schemas.ExplainAnswer,
        responses=ERRORS,
        openapi_extra=UPLOAD_DOC,
        summary="Top-k classes plus a heat map of where the model looked (Grad-CAM, or another method)",
    )
    async def explain(
        request: Request,
        top_k: int = Query(DEFAULT_TOP_K, ge=1, description="how many classes to answer per image"),
        target: str | None = Query(None, description="the class to explain (a name); default: the top class"),
        include_input: bool = Query(False, description="also answer each image as the model saw it (PNG)"),
        method: str = Query(DEFAULT_METHOD, description="a heat-map method, as GET /v1/model lists them"),
    ) -> JSONResponse:
        check_top_k(top_k, service.config.max_top_k)
        async with deadline(service.config.timeout_s):
            answer = await service.explain(
                lambda: read_uploads(request, service.config.max_images), top_k, target, include_input, method
            )
        return JSONResponse(answer)

    @app.get("/v1/model", response_model=schemas.ModelCard, summary="The model card")
    async def model_card() -> JSONResponse:
        return JSONResponse(service.card())

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", response_model=schemas.Health, summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.Health, responses={503: {"model": schemas.Health}}, summary="Ready")
    async def readyz() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "starting"}, status_code=503)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(BatcherStopped)
    async def stopped(request: Request, exc: BatcherStopped) -> JSONResponse:
        return error_response(not_ready(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return error_response(ApiError(422, "bad_parameter", problems or "bad request parameters"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(ApiError(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(ApiError(500, "internal_error", "internal server error (a bug in cnnkit; see the log)"))
