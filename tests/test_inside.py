"""The inside view: cnnkit.explain.inside and POST /v1/inside, checked against the model itself.

Oracles: the layer list against the model's own layers and Keras shapes; the first convolution's
feature maps against F.conv2d + bias + ReLU on the decoded pixels; the multiply-and-sum shown for
one position against the map; the response size of a ResNet-50 against its documented cap.
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from _serve_util import digit_png, png_bomb, png_bytes
from cnnkit.explain import inside, named_layers
from cnnkit.serve import ServeConfig, create_app
from cnnkit.serve.inside import MAX_RESPONSE_BYTES, MAX_VALUES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note that TestClient will move to httpx2
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(trained_seed):
    _, path = trained_seed
    config = ServeConfig(max_body_bytes=2**20, max_images=4, max_pixels=1_000_000)
    with TestClient(create_app(path, config)) as c:
        yield c


@pytest.fixture(scope="module")
def resnet50():
    """An untrained ResNet-50 at 64x64: the size test's large model (weights do not change the size bound)."""
    from cnnkit import models

    return models.create_model("resnet50", num_classes=10, input_size=64)


def post_png(client, data: bytes, path: str = "/v1/inside", **params):
    return client.post(path, content=data, headers={"content-type": "image/png"}, params=params)


def decoded(png: bytes) -> torch.Tensor:
    """The pixels the server decodes from a grey PNG: (1, 1, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)), np.float32) / 255)[None, None]


def dequantized(maps: dict) -> np.ndarray:
    """A layer's maps from the answer: (n, h, w) floats, from the PNG strip and each map's low/high."""
    strip = np.asarray(Image.open(io.BytesIO(base64.b64decode(maps["png"]))), np.float64)  # (h, n * w)
    h, w = maps["size"]
    pixels = strip.reshape(h, -1, w).transpose(1, 0, 2)  # (n, h, w)
    low, high = np.array(maps["low"])[:, None, None], np.array(maps["high"])[:, None, None]
    return low + pixels * (high - low) / 255


def f32(array: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(array["f32"]), "<f4").reshape(array["shape"])


# -- the Python API --------------------------------------------------------------------------------
def test_inside_lists_the_article_models_layers_as_keras_does(trained_seed, digits):
    model, _ = trained_seed
    (_, _), (images, _) = digits
    view = inside(model, images[0])
    expected = [(la.name, type(la).__name__, la.output_shape[1:], la.count_params()) for la in model.layers]
    assert [(la.name, la.kind, la.output_shape, la.params) for la in view.layers] == expected
    assert sum(la.params for la in view.layers) == 93_322
    roles = {la.name: la.role for la in view.layers}
    assert [name for name, la in zip(roles, view.layers) if la.maps is not None] == [
        "conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "conv2d_2",
    ]  # fmt: skip
    assert view.layer("conv2d").maps.maps.shape == (32, 26, 26)  # every channel, full size: under every cap
    assert view.layer("max_pooling2d_1").source == "conv2d_1"  # channel k of a pool comes from filter k
    assert view.layer("flatten").values_total == 576 and len(view.layer("flatten").values) == 576
    np.testing.assert_allclose(view.probabilities, model.predict(images[:1], verbose=0)[0], atol=1e-5)
    np.testing.assert_allclose(view.layer("dense_1").values, view.probabilities)  # the softmax output


def test_first_conv_maps_and_the_multiply_and_sum_match_a_direct_convolution(trained_seed, digits):
    model, _ = trained_seed
    (_, _), (images, _) = digits
    x = torch.from_numpy(images[4]).permute(2, 0, 1)[None]  # (1, 1, 28, 28)
    conv = model.layers[0].conv
    expected = F.conv2d(x, conv.weight, conv.bias).relu()[0].detach().numpy()  # (32, 26, 26)
    view = inside(model, images[4])
    maps = view.layer("conv2d").maps
    np.testing.assert_allclose(maps.maps, expected[maps.channels], atol=1e-6)
    assert np.all(np.diff(maps.activity) <= 0)  # most active first
    work = view.first_conv
    assert (work.layer, work.positions, work.origin, work.activation) == ("conv2d", (26, 26), (0, 0), "relu")
    np.testing.assert_array_equal(work.patch[0], images[4, ..., 0])  # no normalization, no padding
    for f, row, col in [(0, 0, 0), (5, 13, 9), (31, 25, 25)]:
        assert work.output(f, row, col) == pytest.approx(float(expected[f, row, col]), abs=1e-6)
        np.testing.assert_array_equal(work.window(f, row, col)[0], images[4, row : row + 3, col : col + 3, 0])


def test_caps_bound_a_large_model_and_notes_say_what_was_left_out(resnet50):
    model = resnet50
    view = inside(model, torch.rand(3, 64, 64), max_channels=16, max_size=8, max_values=20_000)
    shown = [la.maps.maps for la in view.layers if la.maps is not None]
    assert sum(m.size for m in shown) <= 20_000
    assert all(len(m) <= 16 and max(m.shape[1:]) <= 8 for m in shown)
    conv1 = view.layer("conv1")
    assert conv1.output_shape == (32, 32, 64) and conv1.maps.full_size == (32, 32)
    assert "maps averaged down from 32x32 to 8x8" in conv1.notes and "of 64 channels" in " ".join(conv1.notes)
    # The layer list is every leaf module, in the order the forward pass first ran it, with its output shape.
    ran: dict[str, tuple] = {}

    def record(name: str):  # noqa: ANN202
        return lambda module, inputs, output: ran.setdefault(name, tuple(output.shape[1:])) and None

    hooks = [m.register_forward_hook(record(n)) for n, m in named_layers(model, "all").items()]
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    keras = {n: (s[1], s[2], s[0]) if len(s) == 3 else s for n, s in ran.items()}  # (C, H, W) -> (H, W, C)
    assert [(la.name, la.output_shape) for la in view.layers] == list(keras.items())
    assert sum(la.params for la in view.layers) == model.count_params()
    # The first convolution: 7x7 stride 2 with padding 3, windows cut to max_patch input pixels, centred.
    work = view.first_conv
    assert work.output_size == (32, 32) and work.patch.shape[0] == 3 and max(work.patch.shape[1:]) <= 64
    x = model.normalize(torch.from_numpy(view.image)[None])
    expected = model.net.conv1(x)[0].detach().numpy()  # (64, 32, 32)
    row, col = work.positions[0] - 1, 3
    assert work.output(9, row, col) == pytest.approx(
        float(expected[9, work.origin[0] + row, work.origin[1] + col]), abs=1e-5
    )


@pytest.mark.parametrize("name", ["seed_bn", "lenet5", "alexnet_small", "vgg11", "convnext_tiny", "mobilenet_v3_small"])
def test_every_zoo_family_shows_its_maps_in_channel_first_order(name):
    """ConvNeXt runs its blocks channels-last (torchvision's Permute): the maps still come out (C, H, W)."""
    from cnnkit import models

    model = models.create_model(name, num_classes=5, input_size=32)
    height, width, channels = model.image_shape
    view = inside(model, torch.rand(channels, height, width), max_channels=8)
    with_maps = [la for la in view.layers if la.maps is not None]
    assert with_maps and view.first_conv is not None
    for layer in with_maps:
        assert layer.maps.total == layer.output_shape[2] and layer.maps.full_size == layer.output_shape[:2]
    work, first = view.first_conv, view.layer(view.first_conv.layer).maps
    row, col = work.positions[0] // 2, work.positions[1] // 2
    value = first.maps[0, work.origin[0] + row, work.origin[1] + col]
    assert work.output(int(first.channels[0]), row, col) == pytest.approx(float(value), abs=1e-5)


# -- the HTTP API ----------------------------------------------------------------------------------
def test_endpoint_lists_the_models_layers_and_shapes(client, trained_seed, digits):
    model, _ = trained_seed
    (_, _), (images, _) = digits
    png = digit_png(images, 1)
    answer = post_png(client, png).json()
    assert answer["model"] == "seed" and answer["classes"] == [str(i) for i in range(10)]
    layers = [(la["name"], la["kind"], tuple(la["output_shape"]), la["params"]) for la in answer["layers"]]
    assert layers == [(la.name, type(la).__name__, la.output_shape[1:], la.count_params()) for la in model.layers]
    predicted = post_png(client, png, path="/v1/predict", top_k=10).json()["results"][0]
    probabilities = dict(zip(predicted["labels"], predicted["probabilities"]))
    np.testing.assert_allclose(answer["probabilities"], [probabilities[c] for c in answer["classes"]], atol=1e-5)
    assert answer["predicted"] == predicted["labels"][0]
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["input"]["png"]))))
    assert answer["input"]["shape"] == [28, 28, 1] and seen.shape == (28, 28)
    assert set(answer["timing_ms"]) == {"decode", "inside", "encode", "total"}


def test_endpoint_first_conv_maps_equal_the_convolution_of_the_image_within_a_quantization_step(
    client, trained_seed, digits
):
    model, _ = trained_seed
    (_, _), (images, _) = digits
    png = digit_png(images, 7)
    answer = post_png(client, png).json()
    conv = model.layers[0].conv
    x = decoded(png)  # (1, 1, 28, 28): what the server decodes
    expected = F.conv2d(x, conv.weight, conv.bias).relu()[0].detach().numpy().astype(np.float64)  # (32, 26, 26)
    maps = answer["layers"][0]["maps"]
    got = dequantized(maps)
    assert got.shape == (32, 26, 26) and maps["total"] == 32 and maps["full_size"] == [26, 26]
    step = (np.array(maps["high"]) - np.array(maps["low"])) / 255
    error = np.abs(got - expected[maps["channels"]]).max(axis=(1, 2))
    assert np.all(error <= step / 2 + 1e-5), (error, step)
    # The numbers of the multiply-and-sum: the image itself and the layer's own kernels, exactly.
    first = answer["first_conv"]
    assert first["layer"] == "conv2d" and first["filters"] == maps["channels"] and first["activation"] == "relu"
    np.testing.assert_array_equal(f32(first["patch"]), x[0].numpy())
    weights = conv.weight.detach().numpy()
    np.testing.assert_array_equal(f32(first["kernels"]), weights[first["filters"]])
    np.testing.assert_array_equal(f32(first["bias"]), conv.bias.detach().numpy()[first["filters"]])


def test_kernel_endpoint_answers_one_filter_and_refuses_what_is_not_one(client, trained_seed):
    model, _ = trained_seed
    kernel = client.get("/v1/inside/kernel", params={"layer": "conv2d_1", "channel": 5}).json()
    weights = model.layers[2].conv.weight.detach().numpy()  # (64, 32, 3, 3)
    np.testing.assert_array_equal(f32(kernel["weights"]), weights[5])
    assert kernel["inputs"] == 32 and kernel["bias"] == pytest.approx(float(model.layers[2].conv.bias[5].detach()))
    for params in (
        {"layer": "dense", "channel": 0},
        {"layer": "nope", "channel": 0},
        {"layer": "conv2d", "channel": 32},
    ):
        refused = client.get("/v1/inside/kernel", params=params)
        assert refused.status_code == 422 and refused.json()["code"] == "bad_parameter", params


def _bad_uploads(client, images, path: str) -> dict[str, object]:
    png = digit_png(images, 0)
    post = lambda **kw: client.post(path, **kw)  # noqa: E731
    return {
        "empty body": post(content=b"", headers={"content-type": "image/png"}),
        "truncated png": post(content=png[: len(png) // 2], headers={"content-type": "image/png"}),
        "text named .png": post(files={"f": ("cat.png", b"just text", "image/png")}),
        "png bomb": post(files={"f": ("bomb.png", png_bomb(), "image/png")}),
        "oversized body": post(content=b"\0" * (2**20 + 1), headers={"content-type": "image/png"}),
        "wrong content type": post(content=png, headers={"content-type": "text/plain"}),
        "form without a file": post(files={"f": (None, b"plain field")}),
        "multipart without boundary": post(content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
    }


def test_bad_uploads_get_the_same_status_as_predict(client, digits):
    (_, _), (images, _) = digits
    inside_answers = _bad_uploads(client, images, "/v1/inside")
    predict_answers = _bad_uploads(client, images, "/v1/predict")
    for case, response in inside_answers.items():
        expected = predict_answers[case]
        assert 400 <= response.status_code < 500, (case, response.text)
        assert (response.status_code, response.json()["code"]) == (expected.status_code, expected.json()["code"]), case
    two = client.post("/v1/inside", files=[("f", (f"{i}.png", digit_png(images, i), "image/png")) for i in range(2)])
    assert two.status_code == 413 and "one image" in two.json()["detail"]
    too_big = post_png(client, digit_png(images, 0), max_channels=100_000)
    assert too_big.status_code == 422 and too_big.json()["code"] == "bad_parameter"
    assert post_png(client, digit_png(images, 0)).status_code == 200  # and the server is still up


def test_resnet50_answer_stays_under_its_cap(resnet50):
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)  # the worst case for PNG
    with TestClient(create_app(resnet50, ServeConfig(max_batch=1))) as c:
        for params in ({}, {"max_channels": 256, "max_size": 64}):  # the defaults, and the most one may ask for
            response = post_png(c, png_bytes(noise), **params)
            assert response.status_code == 200, response.text
            assert len(response.content) < MAX_RESPONSE_BYTES
            layers = response.json()["layers"]
            assert (
                sum(len(la["maps"]["channels"]) * np.prod(la["maps"]["size"]) for la in layers if la["maps"])
                <= MAX_VALUES
            )
        assert [la["name"] for la in layers][:4] == ["conv1", "bn1", "relu", "maxpool"]
        assert any("most active of" in " ".join(la["notes"]) for la in layers)


def test_a_model_without_layers_to_show_answers_an_empty_view():
    from _serve_util import GatedNet
    from cnnkit.models import Model

    model = Model(GatedNet(), input_shape=(8, 8, 1), name="dense", class_names=["a", "b", "c"])
    with TestClient(create_app(model)) as c:
        answer = post_png(c, png_bytes(np.zeros((8, 8), np.uint8))).json()
        assert answer["layers"] == [] and answer["first_conv"] is None and answer["notes"]
        assert answer["predicted"] == "a"


def test_the_inside_page_is_served_with_the_strict_policy(client):
    page = client.get("/inside")
    assert page.status_code == 200 and 'id="layers"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    for asset in ("inside.js", "inside-detail.js", "inside-draw.js", "inside.css"):
        text = client.get(f"/static/{asset}").text
        assert "http://" not in text and "https://" not in text  # nothing loaded from elsewhere
    assert 'href="/inside"' in client.get("/").text
    assert "/v1/inside" in client.get("/openapi.json").json()["paths"]
