"""Training jobs: ``cnnkit train --data PROJECT ...`` in a worker process, one at a time, the rest queued.

A job is exactly the command the page shows: the studio runs ``python -m cnnkit train`` with the
flags :func:`cnnkit._flags.command_line` spells from the job's :class:`TrainConfig` options,
so what the studio trains is what the CLI trains, on the same engine. The server only watches the
run folder the engine writes (``metrics.csv`` after each epoch, ``last.safetensors`` with the
weights of the last epoch), so the page stays responsive whatever the training does. Stopping sends
SIGTERM, which ``cnnkit train`` ends like Ctrl-C, leaving the run resumable (``--resume``). The job
list lives in ``.cnnkit-studio/jobs.json``: a reload of the page, or a restart of the studio, finds it.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from cnnkit._flags import command_line
from cnnkit._io import atomic_write_json
from cnnkit.recipe.config import TrainConfig
from cnnkit.studio.project import Project, ProjectError

__all__ = ["Jobs", "read_metrics"]

# What a studio job may set; the rest keep cnnkit train's defaults (the data and the run folder are the project's).
JOB_OPTIONS = ("model", "epochs", "batch_size", "optimizer", "lr", "augment", "image_size", "val_split", "seed",
               "label_smoothing", "weight_decay", "patience", "weights", "freeze_epochs", "time", "report")  # fmt: skip
FINISHED = ("done", "failed", "stopped", "interrupted")


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` (one per finished epoch), as numbers."""
    try:
        text = (run_dir / "metrics.csv").read_text()
    except FileNotFoundError:
        return []
    rows = []
    for row in csv.DictReader(text.splitlines()):
        rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


class Jobs:
    """The queue of a project's training jobs and the worker thread that runs them in turn."""

    def __init__(self, project: Project, python: str = sys.executable) -> None:
        self.project = project
        self.python = python
        self.path = project.state / "jobs.json"
        self._lock = threading.Condition()
        self._jobs: list[dict[str, Any]] = json.loads(self.path.read_text()) if self.path.exists() else []
        for job in self._jobs:  # a studio that ended while a job ran: the job is no longer running
            if job["status"] in ("running", "queued"):
                job["status"] = "interrupted" if job["status"] == "running" else "stopped"
        self._process: subprocess.Popen | None = None
        self._closed = False
        self._save()
        self._thread = threading.Thread(target=self._work, name="studio-jobs", daemon=True)
        self._thread.start()

    # -- what the routes call ----------------------------------------------------------
    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """The job's options, checked by :class:`TrainConfig` itself (its own error for a bad value)."""
        unknown = sorted(set(given) - set(JOB_OPTIONS))
        if unknown:
            raise ProjectError(f"a studio job does not set {', '.join(unknown)}; it sets {', '.join(JOB_OPTIONS)}")
        options = {k: v for k, v in given.items() if v is not None and v != ""}
        TrainConfig().replace(**options)  # raises ConfigError naming the option
        return options

    def submit(self, given: dict[str, Any], *, resume: str | None = None, epochs: int | None = None) -> dict:
        """Queue a training (``given``: :data:`JOB_OPTIONS`), or the continuation of the run ``resume``."""
        root = self.project.root
        if resume is not None:
            run = self.project.resolve(resume)
            if run.parent != self.project.runs_dir or not (run / "config.json").is_file():
                raise ProjectError(f"{resume!r} is not a run of this project", 404)
            flags = ["--resume", str(run)] + (["--epochs", str(epochs)] if epochs else [])
            name, options = run.name, {}
        else:
            options = self.options(given)
            stem = Path(str(options.get("model", "seed"))).stem
            name = f"{stem}-{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
            run = self.project.runs_dir / name
            flags = shlex.split(command_line(TrainConfig, {"data": str(root), "out": str(run), **options}))
        job = {"id": uuid.uuid4().hex[:12], "status": "queued", "run": f"runs/{name}", "options": options,
               "command": shlex.join(["cnnkit", "train", *flags]), "flags": flags, "created": time.time(),
               "started": None, "ended": None, "returncode": None, "error": None,
               "epochs": epochs or options.get("epochs", self._planned(run))}  # fmt: skip
        with self._lock:
            self._jobs.append(job)
            self._save()
            self._lock.notify_all()
        return self.describe(job)

    def stop(self, job_id: str) -> dict:
        with self._lock:
            job = self._get(job_id)
            if job["status"] == "queued":
                job["status"] = "stopped"
                self._save()
            elif job["status"] == "running" and self._process is not None:
                job["stopping"] = True
                self._process.send_signal(signal.SIGTERM)  # cnnkit train ends as on Ctrl-C: resumable
            return self.describe(job)

    def list(self) -> list[dict]:
        with self._lock:
            return [self.describe(j) for j in reversed(self._jobs)]

    def get(self, job_id: str) -> dict:
        with self._lock:
            return self.describe(self._get(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> dict:
        """Block until the job has finished (tests, scripts); the job as :meth:`describe` gives it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._get(job_id)["status"] not in FINISHED:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._lock.wait(left)
            return self.describe(self._get(job_id))

    def describe(self, job: dict) -> dict:
        """The job with its progress: each finished epoch's numbers, and the whole run's ETA."""
        run_dir = self.project.root / job["run"]
        rows = read_metrics(run_dir)
        total = int(job.get("epochs") or len(rows) or 1)
        seconds = [r["seconds"] for r in rows if "seconds" in r]
        eta = None
        if job["status"] == "running" and seconds:
            eta = sum(seconds) / len(seconds) * max(0, total - len(rows))
        public = {k: v for k, v in job.items() if k != "flags"}
        return {**public, "history": rows, "epochs": total, "eta_s": eta,
                "model_ready": (run_dir / "model.safetensors").exists() and job["status"] == "done"}  # fmt: skip

    def close(self) -> None:
        """Stop the running job (resumable) and the worker thread."""
        with self._lock:
            self._closed = True
            if self._process is not None and self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
            self._lock.notify_all()
        self._thread.join(timeout=30)

    # -- the worker --------------------------------------------------------------------
    def _planned(self, run: Path) -> int | None:
        try:
            return int(json.loads((run / "config.json").read_text())["epochs"])
        except (OSError, KeyError, ValueError):
            return None

    def _get(self, job_id: str) -> dict:
        for job in self._jobs:
            if job["id"] == job_id:
                return job
        raise ProjectError(f"no job {job_id!r}", 404)

    def _save(self) -> None:
        atomic_write_json(self.path, self._jobs)

    def _next(self) -> dict | None:
        with self._lock:
            while not self._closed:
                queued = [j for j in self._jobs if j["status"] == "queued"]
                if queued:
                    return queued[0]
                self._lock.wait()
            return None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            self._run(job)

    def _run(self, job: dict) -> None:
        log = self.project.state / "jobs" / f"{job['id']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self._lock:
            if job["status"] != "queued" or self._closed:
                return
            with open(log, "wb") as out:
                self._process = subprocess.Popen([self.python, "-m", "cnnkit", "train", *job["flags"]],
                                                 cwd=self.project.root, stdout=out, stderr=subprocess.STDOUT,
                                                 env=env, start_new_session=True)  # fmt: skip
            job.update(status="running", started=time.time(), log=self.project.relative(log))
            self._save()
        code = self._process.wait()
        with self._lock:
            self._process = None
            stopped = job.pop("stopping", False) or self._closed
            job.update(ended=time.time(), returncode=code)
            job["status"] = "done" if code == 0 else ("stopped" if stopped else "failed")
            if code != 0 and not stopped:
                job["error"] = _last_error(log)
            self._save()
            self._lock.notify_all()


def _last_error(log: Path) -> str:
    """The line of the log that says what went wrong (cnnkit's one-line error, else the last line)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("cnnkit: error", "error:")) or "Error" in line]
    return (errors or lines or ["the training process ended without output"])[-1]
