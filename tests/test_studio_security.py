"""The studio refuses whoever lacks its token, a page from another site, a rebinding host name, and class
names that name a path; nothing is ever written outside the project folder."""

from __future__ import annotations

import pytest

from _studio_util import TOKEN, client, files_of, make_project, stripes_png
from cnnkit.studio import ProjectError, check_class_name, create_app


@pytest.fixture
def app(tmp_path):
    app = create_app(make_project(tmp_path / "project"), TOKEN)
    yield app
    app.state.jobs.close()


def test_no_token_is_refused_everywhere(app):
    with client(app, token=None) as c:
        for path in ("/", "/api/project", "/static/studio.js", "/api/classes/vertical/images"):
            r = c.get(path)
            assert r.status_code == 403, path
            assert "token" in r.json()["detail"]
        assert c.post("/api/classes", json={"name": "x"}).status_code == 403
        assert c.get("/api/project", headers={"x-studio-token": "wrong"}).status_code == 403


def test_token_in_the_url_becomes_a_cookie(app):
    with client(app, token=None) as c:
        first = c.get(f"/?token={TOKEN}")
        assert first.status_code == 200
        assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
        assert c.get("/api/project").status_code == 200  # the cookie now carries the token


def test_foreign_origin_and_host_are_refused(app):
    with client(app) as c:
        assert c.get("/api/project", headers={"origin": "http://127.0.0.1"}).status_code == 200  # its own page
        assert c.get("/api/project", headers={"origin": "http://127.0.0.1:9999"}).status_code == 403  # another app
        r = c.post("/api/classes", json={"name": "evil"}, headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and "other sites" in r.json()["detail"]
        assert c.get("/api/project", headers={"host": "evil.example:8000"}).status_code == 403
        assert c.get("/api/project", headers={"origin": "null"}).status_code == 403
    assert not (app.state.project.root / "evil").exists()


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/etc", "a\\b", ".hidden", "__x", "runs", "train", "", " a"])
def test_class_names_that_name_a_path_are_refused(app, name):
    root = app.state.project.root
    before = files_of(root.parent)
    with client(app) as c:
        r = c.post("/api/classes", json={"name": name})
        assert r.status_code == 422, name
    with pytest.raises(ProjectError):
        check_class_name(name)
    assert files_of(root.parent) == before


def test_paths_outside_the_project_are_refused(app, tmp_path):
    (tmp_path / "secret.png").write_bytes(stripes_png(True, 0))
    with client(app) as c:
        for path in ("../secret.png", "/etc/passwd", "vertical/../../secret.png", ".cnnkit-studio/jobs.json"):
            assert c.get("/api/image", params={"path": path}).status_code in (403, 422), path
            assert c.post("/api/images/move", json={"paths": [path], "to": "vertical"}).status_code in (403, 422)
        assert c.patch("/api/classes/vertical", json={"name": "../../outside"}).status_code == 422
    assert (tmp_path / "secret.png").exists() and not (tmp_path / "outside").exists()


def test_uploads_are_checked_and_stay_in_their_class(app, tmp_path):
    root = app.state.project.root
    outside = files_of(tmp_path)
    with client(app) as c:
        files = [("files", ("../../escape.png", stripes_png(True, 1), "image/png")),
                 ("files", ("notes.png", b"not an image at all", "image/png"))]  # fmt: skip
        r = c.post("/api/classes/vertical/images", files=files)
        assert r.status_code == 200
        (added,) = r.json()["added"]
        assert added.startswith("vertical/") and "/" not in added.removeprefix("vertical/")
        assert r.json()["refused"][0]["name"] == "notes.png"
        too_big = c.post("/api/classes/vertical/images", content=b"x" * (17 * 2**20),
                         headers={"content-type": "image/png"})  # fmt: skip
        assert too_big.status_code == 413
    written = files_of(tmp_path) - outside
    assert written and all(p.startswith("project/") for p in written)
    assert (root / added).is_file()
