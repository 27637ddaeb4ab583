"""The pages in a browser window of a laptop's size: the favicon is served, the filter dialog fits."""

from __future__ import annotations

import numpy as np
from PIL import Image

from _browser import artifacts_dir, chromium, needs_chromium
from _serve_util import threaded_server
from cnnkit.serve import create_app


def test_the_favicon_is_served_and_linked(tmp_path, trained_seed):
    from fastapi.testclient import TestClient

    with TestClient(create_app(trained_seed[1])) as client:
        for url in ("/favicon.ico", "/static/favicon.svg"):
            answer = client.get(url)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/svg+xml")
            assert answer.content.startswith(b"<svg")
        for page in ("/", "/inside"):
            assert '<link rel="icon" href="/static/favicon.svg"' in client.get(page).text


@needs_chromium
def test_the_filter_dialog_of_an_rgb_model_fits_a_900_pixel_window(tmp_path):
    from cnnkit import models

    model = models.create_model("seed", num_classes=10, in_channels=3, input_size=32)
    model.class_names = [f"class {i}" for i in range(10)]
    model_path = tmp_path / "rgb.safetensors"
    model.save(model_path)
    photo = tmp_path / "photo.png"
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).resize((32, 32), Image.Resampling.BICUBIC).save(photo)
    with threaded_server(create_app(model_path)) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        failed: list[str] = []
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
        page.goto(url + "/inside")
        page.wait_for_selector("body[data-state=idle]")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-state=ready]")
        page.click("li[data-name=conv2d] canvas.map >> nth=0")
        page.wait_for_selector("#detail[open]")
        page.wait_for_selector("#kernel[data-loaded=true]")
        page.screenshot(path=str(artifacts_dir(tmp_path) / "inside-detail-rgb-1280x900.png"))
        box = page.locator("#detail").bounding_box()
        # The dialog stays inside the window; what does not fit scrolls inside it, close button in reach.
        assert box["y"] >= 0 and box["y"] + box["height"] <= 900, box
        # ... and at this size all of it shows: the three channels' sums, the step buttons, the total.
        overflow = page.eval_on_selector("#detail", "d => d.scrollHeight - d.clientHeight")
        assert overflow <= 1, overflow
        assert page.locator("#slide-sum").bounding_box()["y"] + 20 <= 900
        close = page.locator("#detail-close").bounding_box()
        assert close["y"] >= 0 and close["y"] + close["height"] <= 900
        page.click("#detail-close")
    assert failed == [], failed
