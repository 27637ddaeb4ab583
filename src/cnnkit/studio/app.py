"""The studio's web app: ``create_app(project, token)`` is a FastAPI app ready for uvicorn.

The page (``static/``) and a JSON API under ``/api``: the Gather routes are here, the Build,
Train, Understand and Ship routes in :mod:`cnnkit.studio.routes`. Routes only parse and call
:class:`~cnnkit.studio.project.Project`, :class:`~cnnkit.studio.jobs.Jobs` and
:class:`~cnnkit.studio.insight.Runs`. Every request passes :class:`~cnnkit.studio.security.TokenGuard`
(token, Host, Origin) and the server's body limit; uploads are read by the server's own reader
with its limits, and decoded by cnnkit's one decoder before anything is written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnkit import __version__
from cnnkit.errors import CnnkitError
from cnnkit.serve.app import PAGE_HEADERS
from cnnkit.serve.app import STATIC as SERVE_STATIC
from cnnkit.serve.config import ServeConfig
from cnnkit.serve.limits import ApiError, BodyLimitMiddleware, error_response
from cnnkit.serve.uploads import read_uploads
from cnnkit.studio.insight import Runs
from cnnkit.studio.jobs import Jobs
from cnnkit.studio.project import Project, ProjectError
from cnnkit.studio.routes import add_model_routes
from cnnkit.studio.security import LOOPBACK, TokenGuard
from cnnkit.studio.thumbs import thumbnail

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("uvicorn.error")
MAX_PAGE = 500  # thumbnails per page at most
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".bmp": "image/bmp", ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff"}  # fmt: skip


def create_app(project: str | os.PathLike | Project, token: str, *, hosts: Iterable[str] = LOOPBACK,
               limits: ServeConfig | None = None) -> FastAPI:  # fmt: skip
    """The studio on ``project`` (a folder, made if missing); every request must carry ``token``.

    ``hosts``: the names the ``Host`` (and any ``Origin``) header may give; loopback by default.
    ``limits``: the upload limits (body size, pixels, images per request), the server's by default.
    """
    project = project if isinstance(project, Project) else Project(project)
    limits = limits or ServeConfig()
    project.max_pixels = limits.max_pixels
    jobs = Jobs(project)
    runs = Runs(project)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.close()
        app.state.close_children()

    app = FastAPI(title="cnnkit studio", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.project, app.state.jobs, app.state.runs = project, jobs, runs
    app.state.children = []
    app.state.close_children = lambda: [child.terminate() for child in app.state.children if child.poll() is None]
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)
    app.add_middleware(TokenGuard, token=token, hosts=hosts)  # outermost: nothing runs before the token is checked
    _add_error_handlers(app)
    _add_page(app)
    _add_gather_routes(app, project, limits)
    add_model_routes(app, project, jobs, runs)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/serve-static", StaticFiles(directory=SERVE_STATIC), name="serve-static")
    return app


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(SERVE_STATIC / "favicon.svg", media_type="image/svg+xml")


def _names(body: dict[str, Any], key: str = "paths") -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise ProjectError(f"give {key!r}: a list of project paths (class/file.png)")
    return value


def _add_gather_routes(app: FastAPI, project: Project, limits: ServeConfig) -> None:
    @app.get("/api/project")
    def project_info() -> dict[str, Any]:
        splits = [s for s in project.splits() if s]  # [] when the classes are the project's own sub-folders
        return {"root": str(project.root), "name": project.root.name, "classes": project.classes(),
                "splits": splits, "excluded": len(project.excluded()), "changes": len(project.changes())}  # fmt: skip

    @app.post("/api/classes")
    def create_class(body: dict = Body(...)) -> dict[str, Any]:
        project.create_class(body.get("name", ""))
        return {"classes": project.classes()}

    @app.patch("/api/classes/{name}")
    def rename_class(name: str, body: dict = Body(...)) -> dict[str, Any]:
        project.rename_class(name, body.get("name", ""))
        return {"classes": project.classes()}

    @app.delete("/api/classes/{name}")
    def remove_class(name: str) -> dict[str, Any]:
        change = project.remove_class(name)
        return {"classes": project.classes(), "change": change}

    @app.get("/api/classes/{name}/images")
    def list_images(name: str, offset: int = Query(0, ge=0), limit: int = Query(60, ge=1, le=MAX_PAGE)) -> dict:
        files = project.images(name)
        return {"class": name, "total": len(files), "offset": offset, "images": files[offset : offset + limit]}

    @app.post("/api/classes/{name}/images")
    async def upload(name: str, request: Request) -> JSONResponse:
        project.class_dir(name)  # 404 before the body is read
        uploads = await read_uploads(request, limits.max_images)
        added, refused = [], []
        for item in uploads:
            try:
                added.append(project.add_image(name, item.name, item.data))
            except CnnkitError as e:  # one bad file is named; the others are still added
                refused.append({"name": item.name, "error": str(e)})
        status = 200 if added else 422
        return JSONResponse({"added": added, "refused": refused, "count": len(project.images(name))}, status)

    @app.get("/api/thumb")
    def thumb(path: str) -> Response:
        file = project.image_path(path)
        data = thumbnail(file, path, project.state / "thumbs", project.max_pixels)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/image")
    def image(path: str) -> FileResponse:
        file = project.image_path(path)
        return FileResponse(file, media_type=IMAGE_TYPES.get(file.suffix.lower(), "application/octet-stream"),
                            headers={"X-Content-Type-Options": "nosniff"})  # fmt: skip

    @app.get("/api/check")
    def check() -> dict[str, Any]:
        from cnnkit.data.check import build_report
        from cnnkit.data.folders import index_path
        from cnnkit.data.scan import scan_files

        index = index_path(project.root)
        report = build_report(str(project.root), index, scan_files(index.paths, max_pixels=project.max_pixels))
        return report.to_dict()

    @app.post("/api/images/move")
    def move(body: dict = Body(...)) -> dict[str, Any]:
        return {"change": project.move_images(_names(body), body.get("to")), "classes": project.classes()}

    @app.post("/api/images/restore")
    def restore(body: dict = Body(...)) -> dict[str, Any]:
        return {"change": project.restore_images(_names(body)), "classes": project.classes()}

    @app.post("/api/images/keep")
    def keep(body: dict = Body(...)) -> dict[str, Any]:
        return {"change": project.keep(_names(body))}

    @app.get("/api/excluded")
    def excluded() -> dict[str, Any]:
        return {"images": project.excluded()}

    @app.get("/api/changes")
    def changes() -> dict[str, Any]:
        return {"changes": project.changes()[::-1]}

    @app.post("/api/undo")
    def undo() -> dict[str, Any]:
        return {"change": project.undo(), "classes": project.classes()}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProjectError)
    async def project_error(request: Request, exc: ProjectError) -> JSONResponse:
        return error_response(ApiError(exc.status, "refused", str(exc)))

    @app.exception_handler(CnnkitError)
    async def cnnkit_error(request: Request, exc: CnnkitError) -> JSONResponse:
        return error_response(ApiError(422, "bad_request", str(exc)))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return error_response(ApiError(422, "bad_parameter", problems or "bad request parameters"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(ApiError(exc.status_code, "http_error", str(exc.detail)))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(ApiError(500, "internal_error", f"internal error: {exc}"))
