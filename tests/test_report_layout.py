"""report.html reads as a user wants it: results first, settings last and folded, the data check linked."""

from __future__ import annotations

import re

from _browser import artifacts_dir, chromium, needs_chromium
from cnnkit.report import REPORT_FILE, SECTIONS
from test_data_folders import write_classes


def _run_on_a_folder_with_problems(tmp_path):
    from cnnkit.cli import main

    photos = tmp_path / "photos"
    write_classes(photos, {"cat": 12, "dog": 12}, size=20)
    (photos / "cat" / "broken.png").write_bytes(b"not a png")
    (photos / "dog" / "filed_twice.png").write_bytes((photos / "cat" / "cat_3.png").read_bytes())
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(photos), "--model", "seed_small", "--epochs", "1",
                 "--out", str(run_dir), "-q"]) == 0  # fmt: skip
    return run_dir


def test_results_come_first_and_the_settings_last_folded_in_a_users_words(tmp_path):
    run_dir = _run_on_a_folder_with_problems(tmp_path)
    text = (run_dir / REPORT_FILE).read_text()
    order = re.findall(r'<section id="([^"]+)">', text)
    assert order == [sid for sid, _ in SECTIONS]
    results = ["training", "evaluation", "gradcam", "mistakes"]
    assert [sid for sid in order if sid in results] == results and order[-1] == "config"
    assert order.index("mistakes") < order.index("data") < order.index("config")
    settings = re.search(r'<section id="config">(.*?)</section>', text, flags=re.S).group(1)
    assert settings.lstrip().split(">", 1)[0].startswith("<h2") and "<details>" in settings
    assert "<td>--model</td><td>seed_small</td>" in settings and "<td>--tta</td><td>off</td>" in settings
    assert "<td>--patience</td><td>none</td>" in settings
    assert not re.search(r"<td>(None|False|True)</td>", settings)
    data = re.search(r'<section id="data">(.*?)</section>', text, flags=re.S).group(1)
    assert '<a href="data_report.html">data_report.html</a>' in data and (run_dir / "data_report.html").exists()
    assert "broken.png" in data and "bad_files.txt" in data
    assert "identical files under different classes" in data and "dog/filed_twice.png (dog," in data
    assert "cat/cat_3.png (cat," in data


@needs_chromium
def test_the_report_opens_on_its_results(tmp_path):
    run_dir = _run_on_a_folder_with_problems(tmp_path)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((run_dir / REPORT_FILE).as_uri(), wait_until="load")
        page.screenshot(path=str(artifacts_dir(tmp_path) / "report-top.png"))
        # The first screen shows the curves, not a table of options; the settings are folded away.
        first = page.evaluate("document.querySelector('section').id")
        folded = page.evaluate("document.querySelector('#config details').open")
        settings_visible = page.locator("#config table").is_visible()
        page.click("#config summary")
        opened = page.locator("#config table").is_visible()
    assert first == "training" and folded is False and not settings_visible and opened
