"""The page in a real headless browser (Debian's chromium driven by Playwright): upload an image and
see the prediction, draw a digit and see a prediction, turn on the heat map, read an error, fit a phone screen."""

from __future__ import annotations

import base64

import httpx

from _browser import artifacts_dir, chromium, draw_stroke, needs_chromium
from _serve_util import digit_png, threaded_server
from cnnkit.serve import create_app

pytestmark = needs_chromium


def api_top_label(url: str, png: bytes) -> str:
    answer = httpx.post(f"{url}/v1/predict", content=png, headers={"content-type": "image/png"}).json()
    return answer["results"][0]["labels"][0]


def test_page_recognizes_an_upload_and_a_drawing_on_a_phone_screen(trained_seed, digits, tmp_path):
    _, model_path = trained_seed
    (_, _), (images, _) = digits
    artifacts = artifacts_dir(tmp_path)
    digit = tmp_path / "digit.png"
    digit.write_bytes(digit_png(images, 3))

    with threaded_server(create_app(model_path)) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        page.goto(url)
        page.wait_for_selector("#model-card dt")
        assert "93,322" in page.inner_text("#model-card")
        assert page.is_visible("#pad")  # 28x28 grayscale: the drawing pad is offered

        # Choose a file: the top class on the page is the API's for the same bytes.
        with page.expect_response("**/v1/predict**"):
            page.set_input_files("#file", str(digit))
        page.wait_for_selector("#bars li")
        assert page.get_attribute("#result", "data-top") == api_top_label(url, digit.read_bytes())
        assert page.locator("#bars li").count() == 5
        assert page.inner_text("#bars li:first-child .pct").endswith("%")
        assert page.get_attribute("#seen", "src").startswith("data:image/png;base64,")

        # Draw a stroke: the page sends the drawing and shows the model's answer for it.
        with page.expect_response("**/v1/predict**") as drawn:
            draw_stroke(page, steps=12)
        assert drawn.value.ok
        # expect, not wait_for_function: that one polls through eval, which the page's CSP refuses
        from playwright.sync_api import expect  # here: the module is skipped without playwright

        expect(page.locator("#timing")).not_to_have_text("")
        drawing = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
        png = base64.b64decode(drawing.split(",", 1)[1])
        expect(page.locator("#result")).to_have_attribute("data-top", api_top_label(url, png))
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll

        # The heat-map toggle asks /v1/explain for the same image and shows the Grad-CAM overlay.
        with page.expect_response("**/v1/explain**") as explained:
            page.check("#heat")
        assert explained.value.ok
        page.wait_for_selector("#heat-figure:not([hidden])")
        assert page.get_attribute("#heatmap", "src").startswith("data:image/png;base64,")
        assert "where it looked for" in page.inner_text("#heat-caption")
        page.screenshot(path=str(artifacts / "serve-page-phone.png"), full_page=True)

        # A file that is not an image: the API's message, readable, on the page.
        with page.expect_response("**/v1/explain**"):  # the heat map is on: the page asks /v1/explain
            page.set_input_files("#file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"hi"}])
        page.wait_for_selector("#error:not([hidden])")
        assert "notes.png: not an image" in page.inner_text("#error")
    assert (artifacts / "serve-page-phone.png").read_bytes().startswith(b"\x89PNG")


def test_the_api_docs_render_offline(trained_seed):
    """/docs is Swagger UI from cnnkit's own server: it lists the endpoints with nothing fetched from elsewhere."""
    _, model_path = trained_seed
    with threaded_server(create_app(model_path)) as url, chromium() as browser:
        page = browser.new_page()
        elsewhere: list[str] = []
        page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(url) else None)
        page.goto(f"{url}/docs")
        page.wait_for_selector(".opblock-summary-path")
        paths = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.textContent)")
    assert {"/v1/predict", "/v1/explain", "/v1/inside", "/v1/model"} <= {p.strip().replace("\u200b", "") for p in paths}
    assert elsewhere == []
