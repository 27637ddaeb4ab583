"""The studio's Build, Train, Understand and Ship routes (the Gather routes are in :mod:`cnnkit.studio.app`).

Each answer that stands for a command says which: a training job carries its ``cnnkit train``
line, an lr-find, an export, a serve and an evaluation theirs, so whatever the page does can be
repeated from a terminal.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from typing import Any

import anyio.to_thread
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from cnnkit._flags import command_line
from cnnkit.models import load_model
from cnnkit.recipe.config import TrainConfig
from cnnkit.serve.uploads import read_uploads
from cnnkit.studio.build import BLOCKS, layer_table, registered_models, save_architecture
from cnnkit.studio.insight import Runs, filters_png
from cnnkit.studio.jobs import Jobs
from cnnkit.studio.project import Project, ProjectError

__all__ = ["add_model_routes"]

DOWNLOADS = (".safetensors", ".onnx", ".pt", ".json", ".csv", ".png", ".html")


def add_model_routes(app: FastAPI, project: Project, jobs: Jobs, runs: Runs) -> None:
    """Add the Build, Train, Understand and Ship routes to ``app``."""
    _build_routes(app, project, jobs)
    _train_routes(app, project, jobs)
    _understand_routes(app, project, runs)
    _ship_routes(app, project, runs)


def _build_routes(app: FastAPI, project: Project, jobs: Jobs) -> None:
    @app.get("/api/models")
    def models() -> dict[str, Any]:
        return {
            "models": registered_models(len(project.class_names())),
            "blocks": BLOCKS,
            "defaults": {k: getattr(TrainConfig(), k) for k in ("model", "epochs", "lr", "batch_size", "augment")},
        }

    @app.post("/api/layers")
    def layers(body: dict = Body(...)) -> dict[str, Any]:
        return layer_table(body.get("layers", []), body.get("input_shape", [28, 28, 1]))

    @app.post("/api/architecture")
    def architecture(body: dict = Body(...)) -> dict[str, Any]:
        return {"model": save_architecture(project, body.get("layers", []), body.get("input_shape", [28, 28, 1]))}

    @app.post("/api/command")
    def command(body: dict = Body(...)) -> dict[str, Any]:
        options = jobs.options(body.get("options", {}))
        return {"command": "cnnkit train " + command_line(TrainConfig, {"data": str(project.root), **options})}

    @app.post("/api/lr-find")
    def lr_find(body: dict = Body(...)) -> dict[str, Any]:
        from cnnkit.recipe.config import LR_FIND_OPTIONS as OPTIONS
        from cnnkit.recipe.lr_find import find_learning_rate

        given = {k: v for k, v in jobs.options(body.get("options", {})).items() if k in OPTIONS}
        given = {"data": str(project.root), **given}
        plot = project.state / "lr-find.png"
        found = find_learning_rate(TrainConfig().replace(**given), steps=int(body.get("steps", 60)), plot=plot)
        return {"suggestion": found.suggestion, "lowest": found.lowest,
                "command": "cnnkit lr-find " + command_line(TrainConfig, given)}  # fmt: skip

    @app.get("/api/lr-find.png")
    def lr_find_plot() -> FileResponse:
        plot = project.state / "lr-find.png"
        if not plot.exists():
            raise ProjectError("no lr-find plot yet", 404)
        return FileResponse(plot, media_type="image/png", headers={"Cache-Control": "no-store"})


def _train_routes(app: FastAPI, project: Project, jobs: Jobs) -> None:
    @app.get("/api/jobs")
    def list_jobs() -> dict[str, Any]:
        return {"jobs": jobs.list()}

    @app.post("/api/jobs")
    def submit(body: dict = Body(...)) -> dict[str, Any]:
        if body.get("resume"):
            return jobs.submit({}, resume=body["resume"], epochs=body.get("epochs"))
        return jobs.submit(body.get("options", {}))

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id)

    @app.post("/api/jobs/{job_id}/stop")
    def stop(job_id: str) -> dict[str, Any]:
        return jobs.stop(job_id)

    @app.get("/api/jobs/{job_id}/filters.png")
    def filters(job_id: str) -> Response:
        last = project.root / jobs.get(job_id)["run"] / "last.safetensors"
        if not last.is_file():
            raise ProjectError("no epoch finished yet", 404)
        return Response(filters_png(load_model(last)), media_type="image/png", headers={"Cache-Control": "no-store"})


def _understand_routes(app: FastAPI, project: Project, runs: Runs) -> None:
    @app.get("/api/runs")
    def list_runs() -> dict[str, Any]:
        return {"runs": runs.list()}

    @app.get("/api/runs/{name}/evaluation")
    def evaluation(name: str, scope: str = "test", refresh: bool = False) -> dict[str, Any]:
        result = runs.evaluate(name, scope) if refresh else runs.evaluation(name, scope)
        run = project.relative(runs.run_dir(name))
        data = "" if scope == "test" else f" --data {shlex.quote(str(project.root))}"
        return {**result.to_dict(), "command": f"cnnkit evaluate {shlex.quote(str(project.root / run))}{data}"}

    @app.get("/api/runs/{name}/cell")
    def cell(name: str, true: int, predicted: int, scope: str = "test") -> dict[str, Any]:
        result = runs.evaluation(name, scope)
        classes = len(result.evaluation.class_names)
        if not (0 <= true < classes and 0 <= predicted < classes):
            raise ProjectError(f"a cell is a pair of class indices below {classes}")
        return {"images": result.cell(true, predicted)}

    @app.get("/api/runs/{name}/worst")
    def worst(name: str, n: int = Query(24, ge=1, le=200), scope: str = "test") -> dict[str, Any]:
        return {"images": runs.evaluation(name, scope).worst(n, set(project.kept()))}

    @app.get("/api/runs/{name}/heatmap")
    def heat(name: str, path: str, target: str | None = None) -> Response:
        return Response(runs.heatmap_png(name, path, target), media_type="image/png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ship_routes(app: FastAPI, project: Project, runs: Runs) -> None:
    @app.post("/api/runs/{name}/predict")
    async def predict(name: str, request: Request) -> JSONResponse:
        upload = (await read_uploads(request, 1))[0]
        answer = await anyio.to_thread.run_sync(runs.predict, name, upload.data, upload.name)
        command = f"cnnkit predict {shlex.quote(str(runs.run_dir(name)))} IMAGE"
        return JSONResponse({**answer, "command": command})

    @app.post("/api/runs/{name}/export")
    def export(name: str, body: dict = Body(...)) -> dict[str, Any]:
        from cnnkit.export import export_model

        fmt, quantize = body.get("format", "onnx"), body.get("quantize") or None
        run = runs.run_dir(name)
        result = export_model(run / "model.safetensors", fmt, quantize=quantize)
        words = ["cnnkit", "export", str(run), "--format", fmt] + (["--quantize", quantize] if quantize else [])
        report = [str(result.parity)] + ([str(result.quantization)] if result.quantization else [])
        return {
            "file": result.path.name,
            "size": result.size,
            "passed": result.parity.passed,
            "report": report,
            "command": shlex.join(words),
        }

    @app.get("/api/runs/{name}/download")
    def download(name: str, file: str) -> FileResponse:
        run = runs.run_dir(name)
        path = run / file
        if "/" in file or "\\" in file or not path.is_file() or not file.endswith(DOWNLOADS):
            raise ProjectError(f"{file!r} is not a file of run {name}", 404)
        return FileResponse(path, filename=f"{name}-{file}", media_type="application/octet-stream")

    @app.post("/api/runs/{name}/serve")
    def serve(name: str) -> dict[str, Any]:
        run, port = runs.run_dir(name), _free_port()
        words = ["serve", str(run), "--port", str(port), "--backend", "torch"]
        child = subprocess.Popen([sys.executable, "-m", "cnnkit", *words], cwd=project.root,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        app.state.children.append(child)
        return {
            "url": f"http://127.0.0.1:{port}/",
            "inside": f"http://127.0.0.1:{port}/inside",
            "command": shlex.join(["cnnkit", *words]),
        }
