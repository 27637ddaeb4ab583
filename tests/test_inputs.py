"""One conversion of what a user holds to a model's batch (``to_batch``), through every caller.

Each input kind (a path, bytes, a PIL image, arrays and tensors of every accepted layout, lists)
goes through each caller family (``Model.predict`` and ``evaluate``, both predictors,
``explain.gradcam`` and ``explain.inside``) and must give what the same pixels give as a plain
``(N, C, H, W)`` tensor. The pixels are whole multiples of 1/255, so a PNG round trip is exact.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import explain, layers, models
from cnnkit.data.transforms import to_batch
from cnnkit.errors import ShapeError
from cnnkit.inference import predictor_for

SHAPE = (12, 10, 1)  # (H, W, C): not square, so a swapped height and width cannot pass


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = models.Sequential([
        layers.Input(SHAPE), layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model.eval()


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, (2, *SHAPE[:2]), dtype=np.uint8)  # (2, H, W)


@pytest.fixture(scope="module")
def reference(pixels):
    return torch.from_numpy(pixels.astype(np.float32) / 255)[:, None]  # (2, 1, H, W)


@pytest.fixture(scope="module")
def files(pixels, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    paths = [folder / f"{i}.png" for i in range(len(pixels))]
    for path, image in zip(paths, pixels):
        Image.fromarray(image).save(path)
    return paths


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# kind -> (what the user holds, made from the uint8 pixels, the reference floats and the files; which images it is)
KINDS = {
    "path": (lambda px, ref, files: str(files[0]), [0]),
    "pathlike": (lambda px, ref, files: Path(files[0]), [0]),
    "bytes": (lambda px, ref, files: _png(px[0]), [0]),
    "pil": (lambda px, ref, files: Image.fromarray(px[0]), [0]),
    "array (H, W)": (lambda px, ref, files: ref[0, 0].numpy(), [0]),
    "array (H, W, C)": (lambda px, ref, files: ref[0].permute(1, 2, 0).numpy(), [0]),
    "array (N, H, W)": (lambda px, ref, files: ref[:, 0].numpy(), [0, 1]),
    "array (N, H, W, C)": (lambda px, ref, files: np.ascontiguousarray(ref.permute(0, 2, 3, 1).numpy()), [0, 1]),
    "array (N, C, H, W)": (lambda px, ref, files: ref.numpy(), [0, 1]),
    "tensor (C, H, W)": (lambda px, ref, files: ref[0], [0]),
    "tensor (N, C, H, W)": (lambda px, ref, files: ref, [0, 1]),
    "list of paths": (lambda px, ref, files: [str(p) for p in files], [0, 1]),
    "list of a path and a PIL image": (lambda px, ref, files: [files[0], Image.fromarray(px[1])], [0, 1]),
}


@pytest.fixture(scope="module")
def onnx_predictor(tiny):
    return predictor_for(tiny, "onnx")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("caller", ["Model.predict", "Model.evaluate", "TorchPredictor", "OnnxPredictor",
                                    "explain.gradcam", "explain.inside"])  # fmt: skip
def test_every_input_kind_through_every_caller(kind, caller, tiny, pixels, reference, files, onnx_predictor):
    make, which = KINDS[kind]
    source = make(pixels, reference, files)
    expected_batch = reference[which]  # (n, 1, H, W)
    assert torch.equal(to_batch(source, SHAPE), expected_batch)
    with torch.no_grad():
        expected = torch.softmax(tiny(expected_batch), dim=1).numpy()  # (n, classes)
    if caller == "Model.predict":
        np.testing.assert_allclose(tiny.predict(source, verbose=0), expected, atol=1e-6)
    elif caller == "Model.evaluate":
        labels = np.arange(len(which))
        got = tiny.evaluate(source, labels, verbose=0, return_dict=True)
        assert got == pytest.approx(tiny.evaluate(expected_batch, labels, verbose=0, return_dict=True), abs=1e-6)
    elif caller == "TorchPredictor":
        np.testing.assert_allclose(
            predictor_for(tiny, "torch", device="cpu").predict_proba(source), expected, atol=1e-6
        )
    elif caller == "OnnxPredictor":
        np.testing.assert_allclose(onnx_predictor.predict_proba(source), expected, atol=1e-4)
    elif len(which) > 1:  # explain: one image at a time
        with pytest.raises(ShapeError, match="one image at a time"):
            (explain.gradcam if caller == "explain.gradcam" else explain.inside)(tiny, source)
    elif caller == "explain.gradcam":
        np.testing.assert_array_equal(explain.gradcam(tiny, source), explain.gradcam(tiny, expected_batch))
    else:
        np.testing.assert_allclose(explain.inside(tiny, source).probabilities, expected[0], atol=1e-6)


def test_the_3d_array_rule_uses_the_model_input_shape():
    """(H, W, C) one image vs (N, H, W) grey images: decided by the model's input shape (to_batch's docstring)."""
    assert to_batch(np.zeros((28, 28, 1)), (28, 28, 1)).shape == (1, 1, 28, 28)  # exactly one image
    assert to_batch(np.zeros((28, 28, 28)), (28, 28, 1)).shape == (28, 1, 28, 28)  # stacked at the model's size
    assert to_batch(np.zeros((5, 28, 28)), (28, 28, 1)).shape == (5, 1, 28, 28)
    assert to_batch(np.zeros((3, 28, 28)), (28, 28, 1)).shape == (3, 1, 28, 28)  # three grey images, not CHW
    assert to_batch(np.zeros((3, 32, 32)), (32, 32, 3)).shape == (1, 3, 32, 32)  # exactly the model's (C, H, W)
    assert to_batch(np.zeros((40, 30, 3)), (28, 28, 1), conform_arrays=True).shape == (1, 1, 28, 28)  # a photo
    assert to_batch(np.zeros((5, 28, 28)), None).shape == (5, 1, 28, 28)  # no input shape: the last axis decides
    assert to_batch(np.zeros((28, 28, 3)), None).shape == (1, 3, 28, 28)


def test_arrays_keep_their_values_and_nhwc_is_a_view():
    x = np.random.default_rng(1).random((4, 6, 5, 3), dtype=np.float32)
    batch = to_batch(x, (6, 5, 3))
    assert batch.data_ptr() == torch.from_numpy(x).data_ptr()  # no copy
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert to_batch(np.full((2, 2), 200, np.uint8), (2, 2, 1)).max() == 200  # arrays are not rescaled, as in Keras
    assert to_batch(Image.new("L", (2, 2), 255), (2, 2, 1)).max() == 1  # decoded images are in [0, 1]
    flipped = x[..., ::-1, :]  # a view with a negative stride
    assert torch.equal(to_batch(flipped, (6, 5, 3)), torch.from_numpy(flipped.copy()).permute(0, 3, 1, 2))
    assert to_batch([[0.0, 1.0], [1.0, 0.0]], (2, 2, 1)).shape == (1, 1, 2, 2)  # nested lists are an array


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (np.zeros((2, 5, 5, 1)), r"takes \(batch, 1, 4, 4\) images, got \(2, 5, 5, 1\).*\(None, 4, 4, 1\)"),
        (np.zeros((1, 2, 3, 4, 5)), r"cannot read an array of shape \(1, 2, 3, 4, 5\) as images; give an image file"),
        (torch.zeros(4, 4), r"cannot read a tensor of shape \(4, 4\) as images; give"),
        (42, r"cannot read a 'int' object as images; give"),
        ([np.zeros((4, 4, 1)), np.zeros((5, 5, 1))], r"takes \(batch, 1, 4, 4\) images, got \(5, 5, 1\)"),
    ],
)
def test_shapes_it_cannot_place_are_one_line_errors(source, message):
    with pytest.raises(ShapeError, match=message) as error:
        to_batch(source, (4, 4, 1))
    assert "\n" not in str(error.value)


def test_a_list_of_images_of_different_sizes_conforms_when_asked():
    batch = to_batch([np.zeros((4, 4, 1)), np.zeros((8, 6, 1))], (4, 4, 1), conform_arrays=True)
    assert batch.shape == (2, 1, 4, 4)
    assert to_batch([], (4, 4, 1)).shape == (0, 1, 4, 4)


def test_explain_explains_the_prediction_predict_makes_of_a_large_photo(tmp_path):
    """A photo many times the input size: explain's input is predict's (JPEG draft decoding, box reduction)."""
    from cnnkit.inference import TorchPredictor
    from cnnkit.predict import predict_files
    from cnnkit.report.explanation import explain_file

    torch.manual_seed(0)
    model = models.create_model("seed", num_classes=3, in_channels=3, input_size=32).eval()
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(photo, quality=90)
    explained = explain_file(model, photo, "saliency", out=tmp_path / "saliency.png")
    predicted = next(predict_files(TorchPredictor(model, "cpu"), [photo], workers=0))
    assert explained.predicted == predicted.labels[0]
    assert explained.probability == pytest.approx(predicted.probabilities[0], abs=1e-6)
