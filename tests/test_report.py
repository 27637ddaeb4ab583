"""report.html: written by every training run, rebuilt by `cnnkit report`, self-contained, loads in a browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import pytest
from PIL import Image

from _browser import chromium, needs_chromium
from cnnkit.cli import main
from cnnkit.errors import ConfigError
from cnnkit.report import REPORT_FILE, SECTIONS, write_report

_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real (short) training run: the folder `cnnkit train` writes, report included."""
    from cnnkit.recipe import TrainConfig, train

    out = tmp_path_factory.mktemp("report") / "run"
    return train(TrainConfig(epochs=1, out=str(out), verbose=0))


def test_the_run_folder_and_the_report_show_what_the_model_was_fed(run):
    """train_batch.png: written when the run starts, inlined in the report's batch section."""
    from PIL import Image

    assert Image.open(run.run_dir / "train_batch.png").size[0] > 300
    section = _sections((run.run_dir / REPORT_FILE).read_text())["batch"]
    assert "--augment crop+affine" in section and len(_IMG.findall(section)) == 1  # digits' own policy


def run_model(run):
    from cnnkit.models import load_model

    return load_model(run.model_path)


def _sections(text: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', text, flags=re.S))


def test_training_writes_a_report_with_every_section(run):
    path = run.run_dir / REPORT_FILE
    text = path.read_text()
    sections = _sections(text)
    assert list(sections) == [sid for sid, _ in SECTIONS]
    assert f"test accuracy <b>{run.test.accuracy:.2%}</b>" in text  # the number training printed
    # Sections that draw something have their picture; none fell back to a note.
    pictures = {sid: len(_IMG.findall(body)) for sid, body in sections.items()}
    for sid in ("training", "evaluation", "calibration", "filters", "feature-maps", "gradcam", "mistakes"):
        assert pictures[sid] == 1, sid
    assert 'class="note"' not in text
    for sid in ("config", "data", "model", "evaluation"):
        assert "<table>" in sections[sid], sid
    assert "conv2d_2" in sections["gradcam"]  # the layer Grad-CAM used
    for layer in ("conv2d", "conv2d_1", "conv2d_2"):  # every convolution, with the shape the model gives it
        _, h, w, c = dict((lay.name, lay) for lay in run_model(run).layers)[layer].output_shape
        assert f"<code>{layer}</code> ({c}, {h}, {w})" in sections["feature-maps"]
    assert all(f"<td>{d}</td>" in sections["evaluation"] for d in "0123456789")  # class names in the table
    assert {p.name for p in run.run_dir.iterdir()} >= {"confusion.png", "reliability.png", "mistakes.png"}


def test_report_is_self_contained_and_its_images_decode(run):
    text = (run.run_dir / REPORT_FILE).read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', text)  # nothing fetched: no files, no network
    assert "<script" not in text
    images = _IMG.findall(text)
    assert len(images) == 8  # with the training batch
    for data, alt in images:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        assert image.format == "PNG" and min(image.size) >= 100 and alt


def test_cnnkit_report_rebuilds_it(run, capsys):
    path = run.run_dir / REPORT_FILE
    path.unlink()
    (run.run_dir / "confusion.png").unlink()
    assert main(["report", str(run.run_dir), "--samples", "3"]) == 0
    assert f"report written to {path}" in capsys.readouterr().out.replace("\n", "")
    assert len(_IMG.findall(_sections(path.read_text())["gradcam"])) == 1
    assert (run.run_dir / "confusion.png").exists()


def test_report_without_its_data_still_has_every_section(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    split = json.loads((copy / "split.json").read_text())
    (copy / "split.json").write_text(json.dumps({**split, "data": "nope"}))
    text = write_report(copy).read_text()
    assert list(_sections(text)) == [sid for sid, _ in SECTIONS]
    assert "the run&#x27;s data could not be reopened" in text and "unknown data set &#x27;nope&#x27;" in text
    assert len(_IMG.findall(text)) == 3  # the curves, the filters and the training batch need no data


def test_report_of_a_run_on_a_folder_uses_its_recorded_split(tmp_path, capsys):
    from test_data_folders import write_classes

    write_classes(tmp_path / "photos", {"cat": 12, "dog": 12}, size=20)
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "photos"), "--epochs", "1", "--out", str(run_dir), "-q"]) == 0
    capsys.readouterr()
    split = json.loads((run_dir / "split.json").read_text())
    (run_dir / REPORT_FILE).unlink()
    assert main(["report", str(run_dir)]) == 0  # the files are reopened and checked against their hashes
    sections = _sections((run_dir / REPORT_FILE).read_text())
    assert "<td>cat</td>" in sections["data"] and "<td>dog</td>" in sections["data"]
    total = f'<td>total</td><td class="num">{len(split["train"])}</td><td class="num">{len(split["val"])}</td>'
    assert total + f'<td class="num">{len(split["test"])}</td>' in sections["data"]
    assert len(_IMG.findall(sections["gradcam"])) == 1 and 'class="note"' not in sections["evaluation"]


def test_report_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no such run folder"):
        write_report(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a finished training run"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 1
    assert "not a finished training run" in capsys.readouterr().err
    assert not (tmp_path / REPORT_FILE).exists()


@needs_chromium
def test_report_loads_in_headless_chromium_without_errors(run):
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url[:80]}"))
        page.goto((run.run_dir / REPORT_FILE).as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth, i.alt])")
        headings = page.evaluate("Array.from(document.querySelectorAll('section h2'), h => h.textContent)")
    assert errors == []
    assert len(images) == 8 and all(complete and width > 0 for complete, width, _ in images)
    assert headings == [title for _, title in SECTIONS]
