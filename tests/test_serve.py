"""The HTTP API through FastAPI's TestClient: every endpoint, and bad input never gets a 500."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import shutil
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

BACKENDS = ("torch", "onnx")


@pytest.fixture(scope="module")
def model_path(trained_seed, tmp_path_factory):
    """The trained model in a folder of its own, so the ONNX cache next to it belongs to this module."""
    path = tmp_path_factory.mktemp("served") / "model.safetensors"
    shutil.copy(trained_seed[1], path)
    return path


@pytest.fixture(scope="module")
def clients(model_path):
    """The same model served by each backend, with the same small limits."""
    with contextlib.ExitStack() as stack:
        yield {
            backend: stack.enter_context(TestClient(create_app(model_path, _config(backend=backend))))
            for backend in BACKENDS
        }


@pytest.fixture(scope="module")
def client(clients):
    return clients["onnx"]


def _config(**overrides) -> ServeConfig:
    return ServeConfig(max_body_bytes=2**20, max_images=4, max_pixels=1_000_000, **overrides)


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
    assert card["backend"] == "onnx" and card["runtime"].startswith("ONNX Runtime ")
    assert len(card["weights_sha256"]) == 64
    assert {"/v1/predict", "/v1/explain", "/v1/model"} <= set(client.get("/openapi.json").json()["paths"])
    docs = client.get("/docs").text
    assert "cdn." not in docs and "/static-offline-docs/swagger-ui-bundle.js" in docs  # no CDN: works offline
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "redoc.standalone.js" in client.get("/redoc").text


def test_the_card_names_the_backend_and_both_serve_the_same_model(clients):
    torch_card, onnx_card = (clients[b].get("/v1/model").json() for b in BACKENDS)
    assert (torch_card["backend"], onnx_card["backend"]) == BACKENDS
    assert torch_card["runtime"].startswith(f"PyTorch {torch.__version__} on ")  # cpu, or cuda where there is one
    for key in ("name", "classes", "input_shape", "parameters", "training", "weights_sha256", "explain"):
        assert torch_card[key] == onnx_card[key], key


def test_a_corrupt_onnx_cache_is_rebuilt_and_the_server_starts(model_path, tmp_path, test_images):
    from cnnkit._io import file_sha256
    from cnnkit.export import open_onnx
    from cnnkit.inference import cache_path

    path = tmp_path / "model.safetensors"
    shutil.copy(model_path, path)
    cache_path(path).write_bytes(b"\x08\x07 not an ONNX file")  # e.g. a disk that filled up mid-write
    notes = _LogRecords()
    with notes.attached(), TestClient(create_app(path, _config(backend="onnx"))) as c:
        assert c.get("/readyz").json() == {"status": "ready"} and c.get("/v1/model").json()["backend"] == "onnx"
        images, _ = test_images
        assert post_png(c, digit_png(images, 0)).status_code == 200
    assert any("rebuilding the ONNX cache" in message for message in notes.messages)
    assert open_onnx(cache_path(path)).info.source_sha256 == file_sha256(path)  # rebuilt for this model file


def test_a_model_that_does_not_export(model_path, tmp_path, monkeypatch, capsys):
    """--backend onnx: one line at start and no server; auto: served by PyTorch, with a note in the log."""
    import cnnkit.export.exporter as exporter
    import cnnkit.serve.server as server
    from cnnkit.cli import main
    from cnnkit.errors import ExportError

    def unsupported(model, opset=17):
        raise ExportError(f"model {model.name!r} cannot be exported to ONNX: Unsupported: an op")

    class NoServer:  # reached only if the start did not fail
        def __init__(self, *args, **kwargs):
            raise AssertionError("the server should not have started")

    path = tmp_path / "model.safetensors"
    shutil.copy(model_path, path)
    monkeypatch.setattr(exporter, "onnx_graph", unsupported)
    monkeypatch.setattr(server.uvicorn, "Server", NoServer)
    monkeypatch.setattr(server.uvicorn, "run", NoServer)
    for workers in ("1", "2"):  # several workers: decided once, before any starts
        assert main(["serve", str(path), "--backend", "onnx", "--workers", workers, "--port", "0"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == "cnnkit: error: model 'seed' cannot be exported to ONNX: Unsupported: an op\n"
    notes = _LogRecords()
    with notes.attached(), TestClient(create_app(path, _config(backend="auto"))) as c:
        assert c.get("/v1/model").json()["backend"] == "torch"
    assert any("predicting with PyTorch instead" in message for message in notes.messages)
    assert server._resolve_backend(path, _config(backend="auto", workers=2)) == "torch"
    assert "predicting with PyTorch instead" in capsys.readouterr().err


def test_backend_settings_are_checked():
    from cnnkit.errors import ConfigError
    from cnnkit.inference import BACKENDS as PREDICTOR_BACKENDS
    from cnnkit.serve.config import BACKENDS as SERVE_BACKENDS

    assert SERVE_BACKENDS == PREDICTOR_BACKENDS
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; choose from auto, torch, onnx"):
        ServeConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="--backend torch"):
        ServeConfig(backend="onnx", device="cuda")
    with pytest.raises(ConfigError, match="serve the .safetensors model file"):
        create_app("exported.onnx")  # an export has no gradients for heat maps


class _LogRecords(logging.Handler):
    """The messages the server logs (uvicorn's logger does not reach pytest's caplog once uvicorn set it up)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @contextlib.contextmanager
    def attached(self):
        logger = logging.getLogger("uvicorn.error")
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)


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


def _photo_jpeg(digit: np.ndarray, size: tuple[int, int], rng) -> bytes:
    """A digit blown up to a noisy colour ``size`` photo: a JPEG large enough to be draft-decoded."""
    grey = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR))
    grey = np.clip(grey + rng.normal(0, 25, grey.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([grey, grey // 4 * 3, 255 - grey // 2], axis=-1)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_same_answer_from_both_backends_as_cnnkit_predict_and_training(clients, model_path, test_images, tmp_path,
                                                                       cli, rng):  # fmt: skip
    from cnnkit.data.transforms import load_input
    from cnnkit.models import load_model

    images, labels = test_images
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[8:32, 10:20] = 255  # a white bar on a transparent background, at another size
    files = {"digit.png": digit_png(images, 5), "bar.png": png_bytes(rgba)}
    Image.fromarray((images[7, ..., 0] * 255).astype(np.uint8)).convert("RGB").save(tmp_path / "digit.jpg", quality=95)
    files["digit.jpg"] = (tmp_path / "digit.jpg").read_bytes()
    files["photo.jpg"] = _photo_jpeg(images[3, ..., 0], (400, 300), rng)  # decoded at 1/4 size, as in training
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    run = cli("predict", str(model_path), *(str(tmp_path / n) for n in files), "--backend", "onnx",
              "--format", "json", "-k", "5")  # fmt: skip
    assert run.returncode == 0, run.stderr
    from_cli = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in run.stdout.splitlines()}
    assert len(from_cli) == len(files)
    # The oracle for preprocessing: what training feeds the model for each file, through PyTorch.
    model = load_model(model_path)
    trained_on = np.stack([load_input(tmp_path / name, (28, 28, 1)) for name in files])  # (n, 28, 28, 1)
    expected = dict(zip(files, model.predict(trained_on, verbose=0)))  # name -> (10,) probabilities
    form = [("files", (name, data, "application/octet-stream")) for name, data in files.items()]
    answers = {backend: clients[backend].post("/v1/predict", files=form).json()["results"] for backend in BACKENDS}
    for torch_result, onnx_result in zip(answers["torch"], answers["onnx"]):
        name = torch_result["filename"]
        for result in (torch_result, onnx_result):
            assert result["filename"] == name
            assert result["labels"] == from_cli[name]["labels"], name
            np.testing.assert_allclose(result["probabilities"], from_cli[name]["probabilities"], atol=1e-4)
            np.testing.assert_allclose(result["probabilities"], np.sort(expected[name])[::-1][:5], atol=1e-4)
        np.testing.assert_allclose(torch_result["probabilities"], onnx_result["probabilities"], atol=1e-4)
    assert from_cli["photo.jpg"]["labels"][0] == str(labels[3])  # the photo still shows its digit
    assert (answers["onnx"][3]["width"], answers["onnx"][3]["height"]) == (400, 300)  # its own size, not the draft's


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_explain_adds_the_grad_cam_heat_map_of_the_top_class(clients, backend, trained_seed, test_images):
    """Heat maps come from the PyTorch model whichever backend answers the predictions."""
    from cnnkit.explain import gradcam, overlay

    model, _ = trained_seed
    client = clients[backend]
    images, _ = test_images
    png = digit_png(images, 2)
    predicted = post_png(client, png).json()["results"][0]
    response = client.post(
        "/v1/explain", content=png, headers={"content-type": "image/png"}, params={"top_k": 3, "method": "gradcam"}
    )
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
