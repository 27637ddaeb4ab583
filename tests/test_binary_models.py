"""A one-unit sigmoid model (Keras' binary classifier) read as two classes everywhere but Keras' predict.

``Model.predict`` answers Keras' ``(N, 1)`` probability of class 1; ``cnnkit predict``, the
predictors, ``serve``, every export, ``evaluate``, ``explain`` and the inside view answer both
classes, ``[1 - p, p]``, with a name for each (before: a softmax of the one output, 1.0 for
every image).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit as keras
from cnnkit import layers
from cnnkit.classifier import class_logits
from conftest import SRC, run_main
from test_predict_lean import _WRAPPER

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note that TestClient will move to httpx2
    from fastapi.testclient import TestClient


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16 gray images: class 1 is bright on the left half, class 0 on the right (plus noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.random((n, 16, 16, 1), dtype=np.float32) * 0.3
    x[y == 1, :, :8] += 0.6
    x[y == 0, :, 8:] += 0.6
    return x, y


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """A Keras-style cats-vs-dogs model, trained with binary_crossentropy, saved with class names."""
    torch.manual_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(16, 16, 1)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    x, y = _images(256, 0)
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    model.class_names = ["cat", "dog"]
    path = tmp_path_factory.mktemp("binary") / "cats_dogs.safetensors"
    model.save(path)
    test_x, test_y = _images(64, 1)
    p = model.predict(test_x, verbose=0)  # (64, 1): Keras' answer, the probability of "dog"
    assert p.shape == (64, 1) and np.mean((p[:, 0] > 0.5) == test_y) > 0.9  # it learned the task
    return model, path, test_x, test_y, p[:, 0]


def test_class_logits_are_the_two_classes_of_a_sigmoid():
    z = torch.tensor([[-3.0], [0.0], [2.5]])
    both = torch.softmax(class_logits(z), dim=1)
    torch.testing.assert_close(both[:, 1], torch.sigmoid(z[:, 0]))
    torch.testing.assert_close(both.sum(1), torch.ones(3))
    ten = torch.randn(4, 10)
    assert class_logits(ten) is ten  # several outputs: already one per class


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predictors_answer_both_classes(binary, backend):
    from cnnkit.inference import load_predictor

    _, path, x, _, p = binary
    predictor = load_predictor(path, backend)
    assert predictor.class_names == ["cat", "dog"]
    np.testing.assert_allclose(predictor.predict_proba(x), np.stack([1 - p, p], 1), atol=1e-5)
    assert predictor.predict_proba(x[:0]).shape == (0, 2)


def test_a_binary_model_without_class_names_gets_two(binary, tmp_path):
    from cnnkit.inference import load_predictor

    model, _, x, _, p = binary
    model.class_names = None
    try:
        model.save(tmp_path / "unnamed.safetensors")
    finally:
        model.class_names = ["cat", "dog"]
    for backend in ("torch", "onnx"):
        predictor = load_predictor(tmp_path / "unnamed.safetensors", backend)
        assert predictor.class_names == ["0", "1"]
        np.testing.assert_allclose(predictor.predict_proba(x[:4])[:, 1], p[:4], atol=1e-5)
    # cnnkit predict from the ONNX cache just built names them alike without importing torch
    Image.fromarray((x[0, :, :, 0] * 255).astype(np.uint8)).save(tmp_path / "one.png")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = ["predict", str(tmp_path / "unnamed.safetensors"), str(tmp_path / "one.png"), "--format", "csv"]
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "imported: []"
    assert sorted(row[2] for row in csv.reader(io.StringIO(done.stdout)) if row[0] != "path") == ["0", "1"]


def test_cnnkit_predict_prints_the_probability_of_the_class_it_names(binary, tmp_path):
    _, path, x, _, p = binary
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        Image.fromarray((x[i, :, :, 0] * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    result = run_main("predict", str(path), str(folder), "--format", "csv", "--top-k", "2", "--backend", "torch")
    assert result.returncode == 0, result.stderr
    rows = {
        (r["path"].split("/")[-1], r["label"]): float(r["probability"])
        for r in csv.DictReader(io.StringIO(result.stdout))
    }
    for i in range(6):  # the PNG rounds pixels to 1/255: probabilities agree to a little more than float rounding
        assert rows[(f"{i}.png", "dog")] == pytest.approx(p[i], abs=2e-3)
        assert rows[(f"{i}.png", "cat")] == pytest.approx(1 - p[i], abs=2e-3)


@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_exports_give_both_classes_and_pass_parity(binary, tmp_path, export_format):
    from cnnkit.export import export_model
    from cnnkit.inference import load_predictor

    _, path, x, _, p = binary
    suffix = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}[export_format]
    result = export_model(path, export_format, out=tmp_path / f"cats_dogs{suffix}")
    predictor = load_predictor(result.path)
    assert predictor.class_names == ["cat", "dog"]
    np.testing.assert_allclose(predictor.predict_proba(x), np.stack([1 - p, p], 1), atol=1e-4)


def test_evaluate_reads_the_two_classes(binary):
    from cnnkit.evaluate import evaluate_model

    model, _, x, y, p = binary
    evaluation = evaluate_model(model, x, y)
    assert evaluation.summary.accuracy == pytest.approx(np.mean((p > 0.5) == y))
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))  # Keras' binary cross-entropy = 2-class CE
    assert evaluation.summary.loss == pytest.approx(bce, rel=1e-4)
    assert [c.name for c in evaluation.per_class] == ["cat", "dog"]
    np.testing.assert_allclose(evaluation.probabilities[:, 1], p, atol=1e-5)


def test_explain_and_the_inside_view_explain_either_class(binary):
    from cnnkit import explain

    model, _, x, _, p = binary
    i = int(np.argmax(p))  # the most "dog" image
    view = explain.inside(model, x[i])
    assert view.class_names == ["cat", "dog"] and view.predicted == 1
    np.testing.assert_allclose(view.probabilities, [1 - p[i], p[i]], atol=1e-5)
    last = view.layers[-1]
    assert last.output_shape == (1,) and np.allclose(last.values, [p[i]], atol=1e-5)  # Keras' own output
    heat = {t: explain.gradcam(model, x[i], target=t) for t in ("cat", "dog")}
    for name, cam in heat.items():
        assert cam.shape == (16, 16) and np.isfinite(cam).all() and cam.max() > 0, name
    assert not np.allclose(heat["cat"], heat["dog"])  # each class has its own evidence


def test_serve_answers_both_classes(binary):
    from cnnkit.serve import ServeConfig, create_app

    _, path, x, _, p = binary
    i = int(np.argmin(p))  # the most "cat" image
    png = io.BytesIO()
    Image.fromarray((x[i, :, :, 0] * 255).round().astype(np.uint8)).save(png, format="PNG")
    with TestClient(create_app(path, ServeConfig(backend="onnx"))) as client:
        answer = client.post("/v1/predict", files={"file": ("x.png", png.getvalue(), "image/png")}).json()
        assert client.get("/v1/model").json()["classes"] == ["cat", "dog"]
    result = answer["results"][0]
    assert result["labels"] == ["cat", "dog"]
    np.testing.assert_allclose(result["probabilities"], [1 - p[i], p[i]], atol=2e-3)
