"""The studio on a project laid out in splits (``train/ valid/ test/``, each with class folders), as many
downloaded data sets come: its classes are their folders in every split, and every change keeps a split's
images in that split."""

from __future__ import annotations

import pytest

from _studio_util import TOKEN, client, files_of, stripes_png
from cnnkit.data.folders import index_folder
from cnnkit.studio import create_app

COUNTS = {"train": 6, "valid": 2, "test": 2}


@pytest.fixture
def app(tmp_path):
    root = tmp_path / "project"
    for split, n in COUNTS.items():
        for name, vertical in (("vertical", True), ("horizontal", False)):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                (root / split / name / f"{split}-{i}.png").write_bytes(stripes_png(vertical, i + 10 * vertical))
    app = create_app(root, TOKEN)
    yield app
    app.state.jobs.close()


def _user_files(root):
    return {f for f in files_of(root) if not f.startswith(".cnnkit-studio/")}


def test_the_classes_are_their_folders_in_every_split(app):
    root = app.state.project.root
    with client(app) as c:
        info = c.get("/api/project").json()
        assert info["splits"] == ["train", "valid", "test"]
        assert info["classes"] == [
            {"name": "horizontal", "count": 10, "splits": COUNTS},
            {"name": "vertical", "count": 10, "splits": COUNTS},
        ]
        page = c.get("/api/classes/vertical/images", params={"limit": 60}).json()
        assert page["total"] == 10 and page["images"][:2] == [
            "train/vertical/train-0.png",
            "train/vertical/train-1.png",
        ]
        assert page["images"][-1] == "test/vertical/test-1.png"
        assert c.get("/api/thumb", params={"path": "valid/vertical/valid-0.png"}).content[:2] == b"\xff\xd8"
        # New images and new classes go to the train split; a name any split has is taken.
        r = c.post("/api/classes/vertical/images", content=stripes_png(True, 99), headers={"content-type": "image/png"})
        assert r.json()["added"] == ["train/vertical/image.png"] and r.json()["count"] == 11
        assert c.post("/api/classes", json={"name": "diagonal"}).status_code == 200
        assert (root / "train" / "diagonal").is_dir() and not (root / "diagonal").exists()
        assert c.post("/api/classes", json={"name": "vertical"}).status_code == 409
        assert c.post("/api/classes", json={"name": "valid"}).status_code == 422  # a split's name is no class
        assert c.delete("/api/classes/diagonal").status_code == 200 and not (root / "train" / "diagonal").exists()
    index = index_folder(root)  # still what `cnnkit train --data` reads, the new image in train
    assert index.class_names == ["horizontal", "vertical"] and len(index.paths) == 21


def test_relabelling_and_excluding_keep_an_image_in_its_split_and_undo_restores_it(app):
    root = app.state.project.root
    before = _user_files(root)
    with client(app) as c:
        moved = c.post("/api/images/move", json={"paths": ["valid/vertical/valid-1.png"], "to": "horizontal"})
        assert moved.status_code == 200 and (root / "valid" / "horizontal" / "valid-1.png").is_file()
        assert moved.json()["classes"][0]["splits"] == {"train": 6, "valid": 3, "test": 2}
        c.post("/api/images/move", json={"paths": ["test/horizontal/test-0.png"], "to": None})  # exclude
        (excluded,) = c.get("/api/excluded").json()["images"]
        assert excluded == ".cnnkit-studio/excluded/test/horizontal/test-0.png"
        assert c.post("/api/images/restore", json={"paths": [excluded]}).status_code == 200
        assert (root / "test" / "horizontal" / "test-0.png").is_file()
        for _ in range(3):
            assert c.post("/api/undo").status_code == 200
    assert _user_files(root) == before


def test_renaming_and_removing_a_class_do_it_in_every_split_and_undo_does_too(app):
    root = app.state.project.root
    before = _user_files(root)
    with client(app) as c:
        assert c.patch("/api/classes/vertical", json={"name": "upright"}).status_code == 200
        assert all((root / split / "upright").is_dir() and not (root / split / "vertical").exists() for split in COUNTS)
        assert c.patch("/api/classes/upright", json={"name": "horizontal"}).status_code == 409
        assert c.delete("/api/classes/upright").status_code == 200
        assert not any((root / split / "upright").exists() for split in COUNTS)
        assert len(list((root / ".cnnkit-studio" / "excluded").rglob("*.png"))) == 10  # excluded, never deleted
        assert [k["name"] for k in c.get("/api/project").json()["classes"]] == ["horizontal"]
        assert c.post("/api/undo").status_code == 200  # the removal
        assert c.post("/api/undo").status_code == 200  # the renaming
    assert _user_files(root) == before


def test_a_class_only_a_later_split_has_takes_new_images_into_train(app):
    root = app.state.project.root
    (root / "test" / "diagonal").mkdir()
    (root / "test" / "diagonal" / "d.png").write_bytes(stripes_png(True, 5))
    with client(app) as c:
        listed = {k["name"]: k for k in c.get("/api/project").json()["classes"]}
        assert listed["diagonal"]["splits"] == {"train": 0, "valid": 0, "test": 1}
        r = c.post("/api/classes/diagonal/images", content=stripes_png(False, 6), headers={"content-type": "image/png"})
        assert r.json()["added"] == ["train/diagonal/image.png"] and r.json()["count"] == 2
