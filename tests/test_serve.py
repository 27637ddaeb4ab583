"""The HTTP API through FastAPI's TestClient: every endpoint, and bad input never gets a 500."""

from __future__ import annotations

import base64
import io
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from _serve_util import digit_png, png_bomb, png_bytes
from cnnkit.data.transforms import conform

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note that TestClient will move to httpx2
    from fastapi.testclient import TestClient

from cnnkit.serve import ServeConfig, create_app


@pytest.fixture(scope="module")
def client(trained_seed):
    _, path = trained_seed
    config = ServeConfig(max_body_bytes=2**20, max_images=4, max_pixels=1_000_000)
    with TestClient(create_app(path, config)) as c:
        yield c


@pytest.fixture(scope="module")
def test_images(digits):
    (_, _), (images, labels) = digits
    return images, labels


def post_png(client, data: bytes, **params):
    return client.post("/v1/predict", content=data, headers={"content-type": "image/png"}, params=params)


def test_health_readiness_and_model_card(client, trained_seed):
    model, _ = trained_seed
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    card = client.get("/v1/model").json()
    assert card["name"] == "seed"
    assert card["classes"] == [str(i) for i in range(10)]
    assert card["input_shape"] == [28, 28, 1]
    assert card["parameters"] == 93_322
    assert card["training"] == model.training_summary
    assert card["limits"]["max_images"] == 4 and card["limits"]["max_body_bytes"] == 2**20
    assert card["explain"] is True
    assert len(card["weights_sha256"]) == 64
    assert {"/v1/predict", "/v1/explain", "/v1/model"} <= set(client.get("/openapi.json").json()["paths"])
    assert client.get("/docs").status_code == 200


def test_predict_raw_body_matches_the_model(client, trained_seed, test_images):
    model, _ = trained_seed
    images, _ = test_images
    answer = post_png(client, digit_png(images, 0), top_k=3).json()
    expected = model.predict(images[:1], verbose=0)[0]  # (10,) probabilities on the same pixels
    result = answer["results"][0]
    assert answer["model"] == "seed" and answer["batch_size"] >= 1
    assert result["labels"] == [str(i) for i in np.argsort(-expected)[:3]]
    np.testing.assert_allclose(result["probabilities"], np.sort(expected)[::-1][:3], atol=1e-5)
    assert (result["width"], result["height"]) == (28, 28)
    assert set(answer["timing_ms"]) == {"decode", "model", "total"}


def test_predict_several_images_in_a_form(client, test_images):
    images, labels = test_images
    files = [("files", (f"digit{i}.png", digit_png(images, i), "image/png")) for i in range(4)]
    answer = client.post("/v1/predict", files=files, data={"note": "ignored"}).json()
    assert [r["filename"] for r in answer["results"]] == [f"digit{i}.png" for i in range(4)]
    singles = [post_png(client, digit_png(images, i)).json()["results"][0] for i in range(4)]
    for batched, single in zip(answer["results"], singles):
        assert batched["labels"] == single["labels"]
        np.testing.assert_allclose(batched["probabilities"], single["probabilities"], atol=1e-5)
        assert len(batched["labels"]) == 5 and batched["probabilities"] == sorted(
            batched["probabilities"], reverse=True
        )


def test_include_input_shows_the_image_as_the_model_sees_it(client, rng):
    photo = (rng.random((60, 90, 3)) * 255).astype(np.uint8)  # a colour image of another size
    answer = post_png(client, png_bytes(photo), include_input="true").json()
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["results"][0]["input_png"]))))
    assert seen.shape == (28, 28)
    x = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = conform(x, (28, 28, 1))[0, 0].numpy() * 255  # luma and antialiased resize, as training data
    # PIL's own luma rounds to 8 bits before the resize: one or two levels apart at most.
    assert np.abs(seen.astype(np.float32) - expected).max() <= 2.0


def test_same_answer_as_cnnkit_predict(client, trained_seed, test_images, tmp_path, cli):
    images, _ = test_images
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[8:32, 10:20] = 255  # a white bar on a transparent background, at another size
    files = {"digit.png": digit_png(images, 5), "bar.png": png_bytes(rgba)}
    Image.fromarray((images[7, ..., 0] * 255).astype(np.uint8)).convert("RGB").save(tmp_path / "digit.jpg", quality=95)
    files["digit.jpg"] = (tmp_path / "digit.jpg").read_bytes()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    _, model_path = trained_seed
    run = cli("predict", str(model_path), *(str(tmp_path / n) for n in files), "--format", "json", "-k", "5")
    assert run.returncode == 0, run.stderr
    from_cli = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in run.stdout.splitlines()}
    form = [("files", (name, data, "application/octet-stream")) for name, data in files.items()]
    for result in client.post("/v1/predict", files=form).json()["results"]:
        expected = from_cli[result["filename"]]
        assert result["labels"] == expected["labels"]
        np.testing.assert_allclose(result["probabilities"], expected["probabilities"], atol=1e-5)


def _truncated_png(images) -> bytes:
    data = digit_png(images, 0)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "case, status, code",
    [
        ("empty body", 422, "no_image"),
        ("truncated png", 422, "bad_image"),
        ("text named .png", 415, "unsupported_image"),
        ("20000x20000 png bomb", 413, "too_many_pixels"),
        ("oversized body", 413, "body_too_large"),
        ("oversized chunked body", 413, "body_too_large"),
        ("wrong content type", 415, "unsupported_media_type"),
        ("multipart flood", 413, "too_many_parts"),
        ("too many images", 413, "too_many_images"),
        ("form without a file", 422, "no_image"),
        ("empty file in a form", 422, "no_image"),
        ("multipart without boundary", 400, "bad_multipart"),
        ("top_k zero", 422, "bad_parameter"),
        ("top_k too large", 422, "bad_parameter"),
    ],
)
def test_bad_input_gets_the_right_status_and_the_server_stays_up(client, test_images, case, status, code):
    images, _ = test_images
    png = digit_png(images, 0)
    requests = {
        "empty body": lambda: post_png(client, b""),
        "truncated png": lambda: post_png(client, _truncated_png(images)),
        "text named .png": lambda: client.post("/v1/predict", files={"f": ("cat.png", b"just text", "image/png")}),
        "20000x20000 png bomb": lambda: client.post("/v1/predict", files={"f": ("bomb.png", png_bomb(), "image/png")}),
        "oversized body": lambda: post_png(client, b"\0" * (2**20 + 1)),
        "oversized chunked body": lambda: client.post(
            "/v1/predict", content=iter([b"\0" * 2**19] * 3), headers={"content-type": "image/png"}
        ),
        "wrong content type": lambda: client.post("/v1/predict", content=png, headers={"content-type": "text/plain"}),
        "multipart flood": lambda: client.post("/v1/predict", files=[(f"field{i}", (None, b"x")) for i in range(5000)]),
        "too many images": lambda: client.post(
            "/v1/predict", files=[("f", (f"{i}.png", png, "image/png")) for i in range(5)]
        ),
        "form without a file": lambda: client.post("/v1/predict", files={"f": (None, b"plain field")}),
        "empty file in a form": lambda: client.post("/v1/predict", files={"f": ("a.png", b"", "image/png")}),
        "multipart without boundary": lambda: client.post(
            "/v1/predict", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
        ),
        "top_k zero": lambda: post_png(client, png, top_k=0),
        "top_k too large": lambda: post_png(client, png, top_k=1000),
    }
    response = requests[case]()
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"]
    assert client.get("/healthz").status_code == 200
    assert post_png(client, png).status_code == 200


def test_errors_name_the_file_and_say_what_to_do(client):
    response = client.post("/v1/predict", files={"f": ("holiday.png", b"<html>", "image/png")})
    assert response.json()["detail"].startswith("holiday.png: not an image")
    response = client.post("/v1/predict", content=b"x", headers={"content-type": "application/json"})
    assert "Content-Type image/png" in response.json()["detail"]


def test_other_routes_answer_json_and_nothing_names_a_path(client, test_images):
    images, _ = test_images
    assert client.get("/v1/predict").status_code == 405
    assert client.get("/v1/predict").json()["code"] == "method_not_allowed"
    assert client.get("/no/such/page").json()["code"] == "not_found"
    assert client.get("/static/..%2f..%2fapp.py").status_code == 404
    # Unknown parameters (a model, a path, a URL) are not read: the answer is the fixed model's.
    answer = post_png(client, digit_png(images, 0), model="/etc/passwd", url="http://example.com/x.png").json()
    assert answer["model"] == "seed"


def test_the_page_is_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http" not in client.get("/static/app.js").text.replace("HTTP ", "")  # nothing loaded from elsewhere


def test_explain_adds_the_grad_cam_heat_map_of_the_top_class(client, trained_seed, test_images):
    from cnnkit.explain import gradcam, overlay

    model, _ = trained_seed
    images, _ = test_images
    png = digit_png(images, 2)
    predicted = post_png(client, png).json()["results"][0]
    response = client.post("/v1/explain", content=png, headers={"content-type": "image/png"}, params={"top_k": 3})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["labels"] == predicted["labels"][:3] and result["target"] == predicted["labels"][0]
    heat = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"]))))
    assert heat.shape == (28, 28, 3)
    # The oracle: cnnkit.explain on the same decoded pixels (the server only runs it on the model thread).
    x = torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)), np.float32) / 255)[None]
    expected = np.asarray(overlay(x, gradcam(model, x, target=int(result["target"]))))
    assert np.abs(heat.astype(int) - expected.astype(int)).max() <= 1


def test_explain_a_chosen_class_and_refuse_an_unknown_one(client, test_images):
    images, _ = test_images
    png = digit_png(images, 2)
    answer = client.post("/v1/explain", files={"f": ("d.png", png, "image/png")}, params={"target": "7"}).json()
    assert answer["results"][0]["target"] == "7" and answer["timing_ms"]["explain"] >= 0
    refused = client.post("/v1/explain", content=png, headers={"content-type": "image/png"}, params={"target": "cat"})
    assert refused.status_code == 422 and "not one of the model's classes" in refused.json()["detail"]
    broken = client.post("/v1/explain", content=png[:50], headers={"content-type": "image/png"})
    assert broken.status_code == 422 and broken.json()["code"] == "bad_image"


def test_a_model_without_convolutions_says_it_cannot_be_explained():
    from _serve_util import GatedNet
    from cnnkit.models import Model

    model = Model(GatedNet(), input_shape=(8, 8, 1), name="dense", class_names=["a", "b", "c"])
    with TestClient(create_app(model)) as c:
        assert c.get("/v1/model").json()["explain"] is False
        png = png_bytes(np.zeros((8, 8), np.uint8))
        response = c.post("/v1/explain", content=png, headers={"content-type": "image/png"})
        assert response.status_code == 422 and response.json()["code"] == "cannot_explain"
        assert c.post("/v1/predict", content=png, headers={"content-type": "image/png"}).status_code == 200


def test_not_ready_until_started():
    from _serve_util import GatedNet
    from cnnkit.models import Model

    app = create_app(Model(GatedNet(), input_shape=(8, 8, 1), name="m", class_names=["a", "b", "c"]))
    c = TestClient(app)  # no `with`: the lifespan (model thread, warm-up) has not run
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 503
    png = png_bytes(np.zeros((8, 8), np.uint8))
    refused = c.post("/v1/predict", content=png, headers={"content-type": "image/png"})
    assert refused.status_code == 503 and refused.json()["code"] == "not_ready"
