"""The studio in a real headless browser (Debian's chromium driven by Playwright): create a project, add two
classes by upload, train two epochs and watch the curves and filters appear, click a confusion cell and see its
images, relabel one (the file moves on disk), try the model, export it; a screenshot of each step."""

from __future__ import annotations

import pytest

from _browser import artifacts_dir, chromium, needs_chromium
from _serve_util import threaded_server
from _studio_util import TOKEN, stripes_png
from cnnkit.studio import create_app

pytestmark = [needs_chromium, pytest.mark.slow]


def test_gather_train_understand_fix_and_ship_in_the_browser(tmp_path):
    artifacts = artifacts_dir(tmp_path)
    uploads = tmp_path / "uploads"
    for name, vertical in (("vertical", True), ("horizontal", False)):
        (uploads / name).mkdir(parents=True)
        for i in range(10):
            (uploads / name / f"{name}-{i}.png").write_bytes(stripes_png(vertical, i + 50 * vertical))
    root = tmp_path / "project"  # made by the studio: an empty project to begin with
    app = create_app(root, TOKEN)
    with threaded_server(app) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(f"{url}/?token={TOKEN}")
        page.wait_for_selector("#classes p")  # "No classes yet"

        # 1. Gather: two classes, each filled by choosing files.
        for name in ("horizontal", "vertical"):
            page.fill("#new-class", name)
            page.click("#add-class")
            page.wait_for_selector(f'.class[data-class="{name}"]')
            with page.expect_response("**/images") as answer:
                page.set_input_files(f'.class[data-class="{name}"] input[data-class]',
                                     sorted(str(p) for p in (uploads / name).iterdir()))  # fmt: skip
            assert answer.value.ok
            page.wait_for_selector(f'.class[data-class="{name}"] .grid img >> nth=9')
        assert page.inner_text('.class[data-class="vertical"] .count') == "10 images"
        assert sorted(p.name for p in (root / "vertical").iterdir()) == sorted(
            p.name for p in (uploads / "vertical").iterdir())  # fmt: skip
        page.click("#check")
        page.wait_for_selector("#check-result p")
        assert "20 of 20 files readable" in page.inner_text("#check-result")
        page.screenshot(path=str(artifacts / "studio-1-gather.png"), full_page=True)

        # 2. Build and train: two epochs of a small model; the curves and the filters appear.
        page.click('#tabs button[data-tab="train"]')
        # A layer stack of one's own: each layer's output shape and parameters, and the API's own error.
        page.select_option("#model", "__stack__")
        page.wait_for_selector("#stack tbody tr >> nth=3")
        assert page.inner_text("#stack tbody tr:nth-child(1) td:nth-child(4)") == "(None, 26, 26, 16)"
        assert page.inner_text("#stack tbody tr:nth-child(1) td:nth-child(5)") == "160"
        page.select_option("#block", "Dense")
        page.click("#add-layer")  # inserted before the last layer
        page.click("#stack tbody tr:nth-child(3) button")  # remove the Flatten: Dense on a 4-D input
        page.wait_for_selector("#stack-error:not([hidden])")
        assert "Flatten" in page.inner_text("#stack-error")
        page.screenshot(path=str(artifacts / "studio-2a-layers.png"), full_page=True)
        page.select_option("#model", "seed_small")
        page.fill("#image-size", "20")
        page.fill("#epochs", "2")
        page.fill("#batch-size", "8")
        page.fill("#lr", "0.01")
        page.dispatch_event("#lr", "change")
        page.wait_for_function("() => document.querySelector('#command').textContent.includes('--epochs 2')")
        assert page.inner_text("#command").startswith(f"cnnkit train --data {root}")
        page.click("#train")
        page.wait_for_function("() => document.querySelector('#job-status').dataset.status === 'running'")
        page.reload()  # a reload finds the running job
        page.click('#tabs button[data-tab="train"]')
        page.wait_for_function(
            "() => ['running', 'done'].includes(document.querySelector('#job-status').dataset.status)"
        )
        page.wait_for_function("() => document.querySelector('#job-status').dataset.status === 'done'", timeout=240_000)
        page.wait_for_selector("#filters[data-epoch='2']")
        assert page.evaluate("document.querySelector('#filters').naturalWidth") > 0
        curve_pixels = page.evaluate("""() => {
            const c = document.querySelector('#curves');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 2] > 150 && d[i] < 100) n++;
            return n; }""")
        assert curve_pixels > 50  # the blue loss line was drawn
        page.screenshot(path=str(artifacts / "studio-2-train.png"), full_page=True)

        # 3. Understand and fix: the confusion matrix of every image; a cell's images with heat maps; relabel one.
        page.click('#tabs button[data-tab="fix"]')
        page.wait_for_selector("#run option", state="attached")
        page.select_option("#scope", "all")
        page.click("#evaluate")
        page.wait_for_selector("#confusion td")
        counts = page.eval_on_selector_all("#confusion td", "tds => tds.map(td => Number(td.textContent))")
        assert sum(counts) == 20
        page.click("#confusion td[data-true='1'][data-pred='1']" if counts[3] else "#confusion td >> nth=0")
        page.wait_for_selector("#cell-images .item")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#cell-images .item img')].every(i => i.complete)", timeout=120_000
        )
        widths = page.eval_on_selector_all("#cell-images .item img", "imgs => imgs.map(i => i.naturalWidth)")
        assert all(widths), (widths, failed)  # each image and its heat map arrived
        first = page.locator("#cell-images .item").first
        path = first.get_attribute("data-path")
        source_class = path.split("/")[0]
        other = "horizontal" if source_class == "vertical" else "vertical"
        first.locator("select").select_option(other)
        first.locator("button.relabel").click()
        page.wait_for_selector("#cell-images .item.done")
        assert not (root / path).exists()
        assert (root / other / path.split("/")[1]).is_file()
        page.screenshot(path=str(artifacts / "studio-3-fix.png"), full_page=True)

        # 4. Try and ship: a prediction for an upload, then an ONNX export with its parity check.
        page.click('#tabs button[data-tab="ship"]')
        page.wait_for_selector("#try-run option", state="attached")
        with page.expect_response("**/predict"):
            page.set_input_files("#try-file", str(uploads / "vertical" / "vertical-0.png"))
        page.wait_for_selector("#try-result li")
        page.click("#export")
        page.wait_for_function("() => document.querySelector('#export-result').textContent.includes('parity')",
                               timeout=120_000)  # fmt: skip
        assert "cnnkit export" in page.inner_text("#export-result")
        page.screenshot(path=str(artifacts / "studio-4-ship.png"), full_page=True)
        assert not errors, errors
    app.state.jobs.close()


def test_a_project_laid_out_in_splits_shows_its_classes_and_each_splits_count(tmp_path):
    artifacts = artifacts_dir(tmp_path)
    root = tmp_path / "project"
    for split, n in (("train", 4), ("val", 2), ("test", 1)):
        for name, vertical in (("vertical", True), ("horizontal", False)):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                (root / split / name / f"{split}-{i}.png").write_bytes(stripes_png(vertical, i))
    app = create_app(root, TOKEN)
    with threaded_server(app) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/?token={TOKEN}")
        page.wait_for_selector('.class[data-class="vertical"] .grid img >> nth=6')  # every split's images
        assert page.inner_text('.class[data-class="vertical"] .count') == "7 images (train 4, val 2, test 1)"
        assert "classes in train/, val/, test/ (new images go to train/)" in page.inner_text("#project-root")
        assert not page.is_visible('.class[data-class="vertical"] button:text("more")')  # all 7 are shown
        page.screenshot(path=str(artifacts / "studio-splits.png"), full_page=True)
    app.state.jobs.close()
    assert not errors
