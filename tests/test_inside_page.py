"""The inside view in a real headless browser (Debian's chromium driven by Playwright): upload a digit,
see every layer with its maps, enlarge a map with its filter, step the filter over the input and check
the page's multiply-and-sum against the map, pick a class for Grad-CAM, draw a digit; screenshots as artifacts."""

from __future__ import annotations

from _browser import artifacts_dir, chromium, draw_stroke, needs_chromium
from _serve_util import digit_png, threaded_server
from cnnkit.serve import create_app

pytestmark = needs_chromium


def test_inside_view_shows_layers_maps_kernel_and_the_sliding_filter(trained_seed, digits, tmp_path):
    model, model_path = trained_seed
    (_, _), (images, _) = digits
    artifacts = artifacts_dir(tmp_path)
    digit = tmp_path / "digit.png"
    digit.write_bytes(digit_png(images, 3))

    with threaded_server(create_app(model_path)) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 768}, device_scale_factor=1)
        problems: list[str] = []  # script errors and CSP violations would land here
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "console",
            lambda m: (
                problems.append(m.text) if m.type == "error" and "favicon" not in m.location.get("url", "") else None
            ),
        )
        page.goto(url + "/inside")
        page.wait_for_selector("body[data-state=idle]")
        assert "93,322 parameters" in page.inner_text("#model-line")

        # Upload: every layer of the model in order, the maps of its conv and pooling layers, the bars.
        with page.expect_response("**/v1/inside") as answered:
            page.set_input_files("#file", str(digit))
        assert answered.value.ok
        page.wait_for_selector("body[data-state=ready]")
        names = page.eval_on_selector_all("#layers li[data-name]", "rows => rows.map(r => r.dataset.name)")
        assert names == [layer.name for layer in model.layers]
        assert page.locator("li[data-name=conv2d] canvas.map").count() == 8  # the 8 most active of 32
        assert page.locator("li[data-name=flatten] canvas.values").count() == 1
        assert page.locator("#bars li").count() == 10
        page.click("li[data-name=conv2d] .more")  # "all 32"
        assert page.locator("li[data-name=conv2d] canvas.map").count() == 32
        page.wait_for_selector("#cam-figure:not([hidden])")  # Grad-CAM of the predicted class
        page.screenshot(path=str(artifacts / "inside-view.png"))

        # Click a map of the first convolution: it enlarges, with its kernel and the sliding filter.
        page.click("li[data-name=conv2d] canvas.map >> nth=3")
        page.wait_for_selector("#detail[open]")
        page.wait_for_selector("#kernel[data-loaded=true]")
        assert page.locator("#kernel table.nums td").count() == 9  # the 3x3 kernel, with its numbers
        assert page.is_visible("#big-map") and page.is_visible("#slide")
        before = page.inner_text("#slide-pos")
        page.click("#slide-next")
        assert page.inner_text("#slide-pos") != before
        # The page's own multiply-and-sum, with the numbers it shows, gives the value the map holds.
        assert page.get_attribute("#slide-sum", "data-match") == "true"
        assert page.locator("#slide-math table.nums").count() == 3  # input x weights = products
        page.screenshot(path=str(artifacts / "inside-detail.png"))

        # A pooling map: enlarged with the filter of the convolution that made its channel; no sliding view.
        page.click("#detail-close")
        page.click("li[data-name=max_pooling2d_1] canvas.map >> nth=0")
        page.wait_for_selector("#kernel[data-loaded=true]")
        assert "of conv2d_1" in page.inner_text("#kernel-caption") and not page.is_visible("#slide")
        page.click("#detail-close")

        # Click another class: Grad-CAM for that class.
        other = page.eval_on_selector("#bars li[aria-pressed=false]", "li => li.dataset.class")
        with page.expect_response("**/v1/explain?top_k=1&target=*") as explained:
            page.click(f"#bars li[data-class='{other}']")
        assert explained.value.ok
        page.wait_for_selector(f"#cam-figure[data-target='{other}']")

        # Draw a stroke: the drawing is the new input and every layer is redrawn for it.
        with page.expect_response("**/v1/inside") as drawn:
            draw_stroke(page, steps=8)
        assert drawn.value.ok
        page.wait_for_selector("body[data-state=ready]")  # "loading" since the stroke ended
        assert page.get_attribute("#bars li.top", "data-class") == drawn.value.json()["predicted"]
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, no sideways scroll
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert not problems, problems
    assert (artifacts / "inside-detail.png").read_bytes().startswith(b"\x89PNG")
