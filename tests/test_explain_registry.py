"""The explain registry: one table of methods, read by the CLI, the server, the report and the pages.

A toy heat-map method registered here (in-process, removed afterwards) must reach all four
with nothing else changed: that is what "a new method is one function and one registration" means.
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from _browser import artifacts_dir, chromium, needs_chromium
from _serve_util import digit_png, threaded_server
from cnnkit import explain
from cnnkit.cli import main
from cnnkit.errors import ConfigError
from cnnkit.explain import registry
from cnnkit.report.explanation import photo_box

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note that TestClient will move to httpx2
    from fastapi.testclient import TestClient


def toy(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """A heat map that ignores the model: a left-to-right ramp, brightest at the right edge."""
    height, width = x.shape[-2:]
    return np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))


@pytest.fixture
def toy_method(monkeypatch):
    """``toy`` registered for one test; the registry is restored afterwards (monkeypatch puts the table back)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    explain.register_method("toy", toy, produces="heatmap", title="Toy ramp", description="a ramp, for the tests")
    yield "toy"


def _decode(png_b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))), dtype=int)


# -- the registry itself ----------------------------------------------------------------------
def test_builtin_methods_and_what_they_produce():
    produced = {m.name: m.produces for m in explain.list_methods()}
    assert produced == {
        "gradcam": "heatmap", "gradcam++": "heatmap", "layercam": "heatmap", "filters": "filters",
        "feature-maps": "layer-maps", "saliency": "heatmap", "integrated-gradients": "heatmap",
    }  # fmt: skip
    assert explain.list_methods("heatmap")[0].name == "gradcam"
    assert explain.DEFAULT_METHOD == "layercam"  # the one that measures best (benchmarks/explain_quality.py)
    assert [m.name for m in explain.list_methods("heatmap") if m.layer] == ["gradcam", "gradcam++", "layercam"]
    assert explain.get_method("gradcam").title == "Grad-CAM"


def test_a_name_is_registered_once_and_unknown_names_list_the_known_ones(toy_method):
    with pytest.raises(ValueError, match="already registered"):
        explain.register_method("gradcam", toy, produces="heatmap", description="again")
    with pytest.raises(ValueError, match="produces must be one of"):
        explain.register_method("other", toy, produces="picture", description="?")
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; choose from gradcam, .*toy"):
        explain.get_method("nope")
    with pytest.raises(ConfigError, match="unknown heatmap method 'filters'"):
        explain.get_method("filters", "heatmap")


def test_heatmap_calls_every_method_the_same_way(trained_seed, digits):
    model, _ = trained_seed
    _, (images, _) = digits
    x = torch.from_numpy(images[4]).permute(2, 0, 1)  # (1, 28, 28)
    drawn = explain.heatmap(model, x, target=3)
    assert (drawn.target, drawn.layer) == (3, "conv2d_1")  # 11x11: the last convolution at least 7x7
    np.testing.assert_array_equal(drawn.heat, explain.layercam(model, x, target=3))  # the default method
    gradcam = explain.heatmap(model, x, target=3, method="gradcam", layer="conv2d_2")
    np.testing.assert_array_equal(gradcam.heat, explain.gradcam(model, x, target=3, layer="conv2d_2"))
    predicted = int(model.predict(images[4:5]).argmax())
    assert explain.heatmap(model, x).target == predicted  # no target: the predicted class
    assert explain.heatmap(model, x, "3", method="saliency").layer is None
    np.testing.assert_array_equal(explain.heatmap(model, x, 3, method="saliency").heat, explain.saliency(model, x, 3))
    with pytest.raises(ConfigError, match="saliency explains pixels, not a layer"):
        explain.heatmap(model, x, 3, method="saliency", layer="conv2d")
    with pytest.raises(ConfigError, match="unknown heatmap method 'feature-maps'"):
        explain.heatmap(model, x, 3, method="feature-maps")


# -- a new method reaches every surface ---------------------------------------------------------
def test_a_registered_method_reaches_the_cli(toy_method, trained_seed, digits, tmp_path, capsys):
    from cnnkit.cli import build_parser

    model, model_path = trained_seed
    _, (images, _) = digits
    sub = [a for a in build_parser()._actions if a.dest == "command"][0].choices["explain"]
    assert "toy" in [a for a in sub._actions if a.dest == "method"][0].choices
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert "a ramp, for the tests" in capsys.readouterr().out  # the help lists it, with its description

    photo = tmp_path / "digit.png"
    photo.write_bytes(digit_png(images, 4))
    out = tmp_path / "toy.png"
    assert main(["explain", str(model_path), str(photo), "--method", "toy", "--out", str(out)]) == 0
    assert f"toy for class {int(model.predict(images[4:5]).argmax())}" in capsys.readouterr().out
    base = Image.open(photo).convert("RGB").resize((224, 224), Image.Resampling.NEAREST)
    expected = np.asarray(explain.overlay(base, toy(model, torch.zeros(1, 28, 28), 0)), dtype=int)
    drawn = Image.open(out).crop(photo_box(224, 224))  # the photo, without the title and the colour bar
    assert np.abs(np.asarray(drawn, dtype=int) - expected).max() <= 1


def test_a_registered_method_reaches_the_server(toy_method, trained_seed, digits):
    from cnnkit.serve import create_app

    model, _ = trained_seed
    _, (images, _) = digits
    png = digit_png(images, 4)
    with TestClient(create_app(model)) as client:
        card = client.get("/v1/model").json()
        assert [m["name"] for m in card["explain_methods"]] == [
            "gradcam", "gradcam++", "layercam", "saliency", "integrated-gradients", "toy"
        ]  # fmt: skip
        assert card["explain_default"] == "layercam"
        assert {"name": "toy", "title": "Toy ramp", "description": "a ramp, for the tests", "layer": False} in card[
            "explain_methods"
        ]
        answer = client.post(
            "/v1/explain", content=png, headers={"content-type": "image/png"}, params={"method": "toy"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["method"] == "toy"
        x = torch.from_numpy(images[4]).permute(2, 0, 1)
        expected = np.asarray(explain.overlay(x, toy(model, x, 0)), dtype=int)
        assert np.abs(_decode(answer.json()["results"][0]["heatmap_png"]) - expected).max() <= 1
        # No method: the default, Layer-CAM.
        default = client.post("/v1/explain", content=png, headers={"content-type": "image/png"}).json()
        assert default["method"] == "layercam"
        for bad in ("nope", "filters"):  # not a method, or not a heat map: the API's error shape, names listed
            refused = client.post(
                "/v1/explain", content=png, headers={"content-type": "image/png"}, params={"method": bad}
            )
            assert refused.status_code == 422 and refused.json()["code"] == "bad_parameter"
            assert f"'{bad}'" in refused.json()["detail"] and "gradcam, " in refused.json()["detail"]
            assert "toy" in refused.json()["detail"]


def test_a_registered_method_reaches_the_report(toy_method, trained_seed, digits, tmp_path):
    import re

    from cnnkit.data.catalog import Dataset, ImageArrays
    from cnnkit.report import write_report

    model, model_path = trained_seed
    (x, y), (xt, yt) = digits
    data = Dataset("digits", [str(i) for i in range(10)], ImageArrays(x[:64], y[:64]), ImageArrays(xt[:40], yt[:40]))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.safetensors").write_bytes(model_path.read_bytes())
    text = write_report(run_dir, model=model, data=data, samples=3, method="toy").read_text()
    section = re.search(r'<section id="gradcam">(.*?)</section>', text, flags=re.S).group(1)
    assert "Toy ramp of the predicted class" in section and "a ramp, for the tests" in section
    drawn = section.split("<h3>")[0]  # the heat maps, before the table that measures every method
    assert section.count("<img ") == 1 and "conv2d_1" not in drawn  # the toy looks at no layer
    default = write_report(run_dir, model=model, data=data, samples=3).read_text()
    assert "Layer-CAM of the predicted class at conv2d_1" in default
    with pytest.raises(ConfigError, match="unknown heatmap method 'filters'"):
        write_report(run_dir, model=model, data=data, method="filters")


@needs_chromium
def test_a_registered_method_reaches_the_pages(toy_method, trained_seed, digits, tmp_path):
    from cnnkit.serve import create_app

    model, _ = trained_seed
    _, (images, _) = digits
    digit = tmp_path / "digit.png"
    digit.write_bytes(digit_png(images, 4))
    artifacts = artifacts_dir(tmp_path)
    with threaded_server(create_app(model)) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1024, "height": 800}, device_scale_factor=1)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "console",
            lambda m: (
                problems.append(m.text) if m.type == "error" and "favicon" not in m.location.get("url", "") else None
            ),
        )
        page.goto(url)
        page.wait_for_selector("#method option[value=toy]", state="attached")
        options = page.eval_on_selector_all("#method option", "os => os.map(o => [o.value, o.textContent])")
        assert options[0] == ["gradcam", "Grad-CAM"] and ["toy", "Toy ramp"] in options
        assert page.eval_on_selector("#method", "s => s.value") == "layercam"  # the default is chosen
        with page.expect_response("**/v1/predict**"):
            page.set_input_files("#file", str(digit))
        with page.expect_response("**/v1/explain**method=layercam") as explained:
            page.check("#heat")
        assert explained.value.ok
        page.wait_for_selector("#heat-figure:not([hidden])")
        assert "(Layer-CAM)" in page.inner_text("#heat-caption")
        with page.expect_response("**/v1/explain**method=toy") as explained:
            page.select_option("#method", "toy")
        assert explained.value.ok
        # Playwright's expect, not wait_for_function: that one polls through eval, which the page's
        # Content-Security-Policy (script-src 'self') refuses whenever its first check is false.
        from playwright.sync_api import expect  # here: the module is skipped without playwright

        expect(page.locator("#heat-caption")).to_contain_text("(Toy ramp)")
        page.screenshot(path=str(artifacts / "serve-page-methods.png"), full_page=True)

        page.set_viewport_size({"width": 1366, "height": 768})  # the inside view's three columns
        page.goto(url + "/inside")
        page.wait_for_selector("body[data-state=idle]")
        assert ["toy", "Toy ramp"] in page.eval_on_selector_all(
            "#method option", "os => os.map(o => [o.value, o.textContent])"
        )
        page.select_option("#method", "toy")
        with page.expect_response("**/v1/explain?top_k=1&method=toy") as explained:
            page.set_input_files("#file", str(digit))
        assert explained.value.ok
        page.wait_for_selector("#cam-figure[data-method=toy]")
        assert page.inner_text("#cam-caption").startswith("Toy ramp: where it looked for")
        page.locator("aside:has(#out-title)").screenshot(path=str(artifacts / "inside-methods.png"))
        assert not problems, problems
