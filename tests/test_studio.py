"""The studio's API on a tiny project: gather (classes, uploads, thumbnails, the data check), fix (relabel,
exclude, undo), build (models, a layer stack's shapes and the API's own error) and a real training job."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from _studio_util import TOKEN, client, make_project, stripes_png
from cnnkit.data.folders import index_folder
from cnnkit.studio import create_app


@pytest.fixture
def app(tmp_path):
    app = create_app(make_project(tmp_path / "project"), TOKEN)
    yield app
    app.state.jobs.close()


def test_classes_images_and_thumbnails(app):
    root = app.state.project.root
    with client(app) as c:
        assert [k["count"] for k in c.get("/api/project").json()["classes"]] == [12, 12]
        assert c.post("/api/classes", json={"name": "diagonal"}).status_code == 200
        assert c.post("/api/classes", json={"name": "diagonal"}).status_code == 409
        r = c.post("/api/classes/diagonal/images", content=stripes_png(True, 7), headers={"content-type": "image/png"})
        assert r.json()["count"] == 1
        page = c.get("/api/classes/vertical/images", params={"offset": 10, "limit": 5}).json()
        assert page["total"] == 12 and page["images"] == ["vertical/vertical-10.png", "vertical/vertical-11.png"]
        thumb = c.get("/api/thumb", params={"path": "vertical/vertical-10.png"})
        assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
        cached = list((root / ".cnnkit-studio" / "thumbs").rglob("*.jpg"))
        assert len(cached) == 1
        assert c.get("/api/thumb", params={"path": "vertical/vertical-10.png"}).content == thumb.content
        assert c.patch("/api/classes/diagonal", json={"name": "slanted"}).status_code == 200
        assert (root / "slanted").is_dir() and not (root / "diagonal").exists()
        # Removing a class with images excludes them (never deletes), and undo brings the class back.
        (image,) = [p.name for p in (root / "slanted").iterdir()]
        assert c.delete("/api/classes/slanted").status_code == 200
        assert not (root / "slanted").exists()
        assert (root / ".cnnkit-studio" / "excluded" / "slanted" / image).is_file()
        assert c.post("/api/undo").status_code == 200
        assert (root / "slanted" / image).is_file()


def test_data_check_inline(app):
    root = app.state.project.root
    (root / "horizontal" / "copy.png").write_bytes((root / "vertical" / "vertical-00.png").read_bytes())
    (root / "vertical" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with client(app) as c:
        report = c.get("/api/check").json()
    assert [b["path"] for b in report["bad_files"]] == ["vertical/broken.png"]
    assert len(report["label_conflicts"]) == 1


def test_relabel_moves_the_file_and_undo_moves_it_back(app):
    root = app.state.project.root
    with client(app) as c:
        r = c.post("/api/images/move", json={"paths": ["vertical/vertical-03.png"], "to": "horizontal"})
        assert r.status_code == 200
        assert not (root / "vertical" / "vertical-03.png").exists()
        assert (root / "horizontal" / "vertical-03.png").is_file()
        assert [k["count"] for k in r.json()["classes"]] == [13, 11]
        c.post("/api/images/move", json={"paths": ["vertical/vertical-04.png"], "to": None})  # exclude
        assert (root / ".cnnkit-studio" / "excluded" / "vertical" / "vertical-04.png").is_file()
        assert c.get("/api/excluded").json()["images"] == [".cnnkit-studio/excluded/vertical/vertical-04.png"]
        kinds = [e["kind"] for e in c.get("/api/changes").json()["changes"]]
        assert kinds == ["exclude", "relabel"]
        c.post("/api/undo")
        c.post("/api/undo")
        assert (root / "vertical" / "vertical-03.png").is_file() and (root / "vertical" / "vertical-04.png").is_file()
        assert not (root / "horizontal" / "vertical-03.png").exists()
        assert c.post("/api/undo").status_code == 409  # nothing left to undo
    # The project is still exactly what `cnnkit train --data` reads: the state folder is not a class.
    assert index_folder(root).class_names == ["horizontal", "vertical"]


def test_layer_stack_shapes_and_the_apis_own_error(app):
    stack = [{"class_name": "Conv2D", "config": {"filters": 8, "kernel_size": 3}},
             {"class_name": "MaxPooling2D", "config": {"pool_size": 2}},
             {"class_name": "Dense", "config": {"units": 2}}]  # fmt: skip
    with client(app) as c:
        table = c.post("/api/layers", json={"layers": stack, "input_shape": [20, 20, 1]}).json()
        assert [r["output_shape"] for r in table["rows"]] == [[None, 18, 18, 8], [None, 9, 9, 8]]
        assert table["rows"][0]["params"] == 8 * 9 + 8
        assert table["error"]["index"] == 2 and "Flatten" in table["error"]["message"]
        fixed = [*stack[:2], {"class_name": "Flatten", "config": {}}, stack[2]]
        assert c.post("/api/layers", json={"layers": fixed, "input_shape": [20, 20, 1]}).json()["error"] is None
        saved = c.post("/api/architecture", json={"layers": fixed, "input_shape": [20, 20, 1]}).json()["model"]
        assert json.loads(Path(saved).read_text())["class_name"] == "Sequential"
        assert Path(saved).parent == app.state.project.root / ".cnnkit-studio" / "models"
        models = {m["name"]: m for m in c.get("/api/models").json()["models"]}
        assert models["seed"]["input_size"] == 28 and models["seed"]["params"] > 0
        bad = c.post("/api/command", json={"options": {"epochs": 0}})
        assert bad.status_code == 422 and "epochs" in bad.json()["detail"]


def test_lr_find_sweeps_and_plots(app):
    options = {"model": "seed_small", "image_size": 20, "batch_size": 2, "epochs": 3}  # epochs: not lr-find's
    with client(app) as c:
        found = c.post("/api/lr-find", json={"options": options, "steps": 10}).json()
        assert found["suggestion"] > 0
        assert found["command"].startswith("cnnkit lr-find --data ") and "--epochs" not in found["command"]
        assert c.get("/api/lr-find.png").content[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_training_job_runs_cnnkit_train_and_the_run_is_understood(app):
    root = app.state.project.root
    options = {"model": "seed_small", "epochs": 2, "image_size": 20, "batch_size": 8, "lr": 0.01, "report": False}
    with client(app) as c:
        job = c.post("/api/jobs", json={"options": options}).json()
        assert job["command"].startswith(f"cnnkit train --data {root} --out {root}/runs/")
        assert "--epochs 2" in job["command"]
        queued = c.post("/api/jobs", json={"options": {**options, "epochs": 1}}).json()
        assert c.get(f"/api/jobs/{queued['id']}").json()["status"] == "queued"  # one at a time
        c.post(f"/api/jobs/{queued['id']}/stop")
        first = app.state.jobs.wait(job["id"], timeout=240)
        assert first["status"] == "done", first
        assert [row["epoch"] for row in first["history"]] == [1, 2]
        assert {"loss", "accuracy", "val_loss"} <= set(first["history"][0])
        assert c.get(f"/api/jobs/{job['id']}/filters.png").content[:4] == b"\x89PNG"
        assert c.get(f"/api/jobs/{queued['id']}").json()["status"] == "stopped"
        # Train again: the run extended to 3 epochs, through cnnkit train's own --resume.
        again = c.post("/api/jobs", json={"resume": job["run"], "epochs": 3}).json()
        assert again["command"] == f"cnnkit train --resume {root / job['run']} --epochs 3"
        done = app.state.jobs.wait(again["id"], timeout=240)
        assert done["status"] == "done", done
        assert [row["epoch"] for row in done["history"]] == [1, 2, 3]
        # Stop a running job: SIGTERM, which cnnkit train ends as on Ctrl-C.
        running = c.post("/api/jobs", json={"options": options}).json()
        while c.get(f"/api/jobs/{running['id']}").json()["status"] == "queued":
            time.sleep(0.05)
        c.post(f"/api/jobs/{running['id']}/stop")
        assert app.state.jobs.wait(running["id"], timeout=120)["status"] == "stopped"
        run = done["run"].removeprefix("runs/")
        split = json.loads((root / done["run"] / "split.json").read_text())
        assert split["class_names"] == index_folder(root).class_names == ["horizontal", "vertical"]

        evaluation = c.get(f"/api/runs/{run}/evaluation", params={"scope": "all"}).json()
        assert evaluation["images"] == 24 and evaluation["class_names"] == ["horizontal", "vertical"]
        assert sum(map(sum, evaluation["confusion"])) == 24
        cell = c.get(f"/api/runs/{run}/cell", params={"true": 1, "predicted": 1, "scope": "all"}).json()["images"]
        assert all(i["label"] == i["predicted"] == "vertical" for i in cell)
        heat = c.get(f"/api/runs/{run}/heatmap", params={"path": "vertical/vertical-00.png"})
        assert heat.content[:4] == b"\x89PNG", heat.text
        # A page asks for a cell's heat maps all at once: each one computed alone on the shared model.
        paths = [f"vertical/vertical-{i:02d}.png" for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: c.get(f"/api/runs/{run}/heatmap", params={"path": p}), paths))
        assert [a.status_code for a in answers] == [200] * 8
        answer = c.post(f"/api/runs/{run}/predict", content=stripes_png(True, 5),
                        headers={"content-type": "image/png"}).json()  # fmt: skip
        assert set(answer["labels"]) == {"horizontal", "vertical"}
        assert c.get(f"/api/runs/{run}/download", params={"file": "model.safetensors"}).content[:8]
        assert c.get(f"/api/runs/{run}/download", params={"file": "../jobs.json"}).status_code == 404
    # The runs/ folder is not a class for `cnnkit train --data PROJECT`.
    assert index_folder(root).class_names == ["horizontal", "vertical"]
