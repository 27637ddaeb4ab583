"""``cnnkit studio PROJECT``: binds 127.0.0.1 on a free port, prints the URL with its token, refuses requests
without it; a studio restarted after a job was cut off finds the job, resumable; runs/ is never a class."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx

from _studio_util import make_project, stripes_png
from cnnkit.data.folders import index_folder
from cnnkit.studio.jobs import Jobs
from cnnkit.studio.project import Project
from conftest import SRC


def test_the_command_prints_its_url_with_a_token_and_binds_loopback(tmp_path):
    project = make_project(tmp_path / "project", per_class=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("CNNKIT_STUDIO_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "cnnkit", "studio", str(project)], stdout=subprocess.PIPE,
                              text=True, env=env)  # fmt: skip
    try:
        lines = [server.stdout.readline(), server.stdout.readline()]
        match = re.search(r"open (http://127\.0\.0\.1:(\d+))/\?token=(\S+)", lines[1])
        assert match, lines
        url, token = match.group(1), match.group(3)
        assert len(token) >= 24
        assert httpx.get(f"{url}/api/project").status_code == 403
        answer = httpx.get(f"{url}/api/project", headers={"x-studio-token": token})
        assert answer.status_code == 200 and [c["name"] for c in answer.json()["classes"]] == ["horizontal", "vertical"]
        page = httpx.get(f"{url}/?token={token}")
        assert page.status_code == 200 and "cnnkit studio" in page.text
    finally:
        server.terminate()
        server.wait(30)


def test_a_job_cut_off_by_a_restart_is_found_interrupted(tmp_path):
    project = Project(make_project(tmp_path / "project", per_class=2))
    job = {
        "id": "abc",
        "status": "running",
        "run": "runs/seed-x",
        "options": {},
        "command": "cnnkit train ...",
        "flags": [],
        "created": 0,
        "started": 0,
        "ended": None,
        "returncode": None,
        "error": None,
        "epochs": 3,
    }
    queued = {**job, "id": "def", "status": "queued"}
    (project.state / "jobs.json").write_text(json.dumps([job, queued]))
    jobs = Jobs(project)
    try:
        assert [j["status"] for j in jobs.list()] == ["stopped", "interrupted"]
    finally:
        jobs.close()


def test_a_runs_folder_of_runs_is_not_a_class(tmp_path):
    root = make_project(tmp_path / "project", per_class=2)
    run = root / "runs" / "seed-1"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "curves.png").write_bytes(stripes_png(True, 0))
    (root / "runs" / "being-made").mkdir()  # a run folder cnnkit train has just created
    assert index_folder(root).class_names == ["horizontal", "vertical"]
    (root / "runs" / "loose.png").write_bytes(stripes_png(True, 1))  # a class that happens to be named runs
    assert index_folder(root).class_names == ["horizontal", "runs", "vertical"]
