"""`cnnkit explain`: one image file in, one picture out, for every method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit import explain
from cnnkit.cli import explain as explain_cli
from cnnkit.cli import main
from cnnkit.report.explanation import explain_file, photo_box
from conftest import run_cli


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, digits):
    """A test digit saved as a larger RGB photo: explain must decode and conform it like predict."""
    _, (x, y) = digits
    path = tmp_path_factory.mktemp("explain") / "seven.png"
    index = int(np.flatnonzero(y == 7)[0])
    grey = Image.fromarray((x[index, :, :, 0] * 255).astype(np.uint8), "L").resize((84, 84), Image.Resampling.BICUBIC)
    grey.convert("RGB").save(path)
    return path


METHODS = [m.name for m in explain.list_methods()]


def test_cli_methods_are_the_librarys():
    (action,) = [a for a in explain_cli_parser()._actions if a.dest == "method"]
    assert list(action.choices) == METHODS == [
        "gradcam", "gradcam++", "layercam", "filters", "feature-maps", "saliency", "integrated-gradients"
    ]  # fmt: skip


def explain_cli_parser():
    """The ``cnnkit explain`` subparser, as ``cnnkit`` builds it."""
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    explain_cli.add_parser(sub)
    return sub.choices["explain"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_a_picture(trained_seed, digit_png, tmp_path, method, capsys):
    _, model_path = trained_seed
    out = tmp_path / f"{method}.png"
    assert main(["explain", str(model_path), str(digit_png), "--method", method, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "predicted" in text and str(out) in text.replace("\n", "")
    with Image.open(out) as image:
        assert image.format == "PNG" and min(image.size) >= 224
        if method not in ("filters", "feature-maps"):  # an overlay; the others are labelled figures
            left, top, right, bottom = photo_box(252, 252)  # the 84x84 photo, enlarged 3x, under a title
            assert image.mode == "RGB" and (right - left, bottom - top) == (252, 252)
            assert image.size[0] > right and image.size[1] > bottom  # and a colour bar beside it


def test_heat_map_png_is_the_api_heat_map_over_the_photo(trained_seed, digit_png, tmp_path):
    model, model_path = trained_seed
    result = explain_file(model, digit_png, "gradcam", target="3", out=tmp_path / "cam.png")
    assert (result.target, result.layer) == ("3", "conv2d_1")  # 11x11: the last convolution at least 7x7
    # The same pipeline as predict: decode, conform to (28, 28, 1), then Grad-CAM for class 3.
    from cnnkit.data.decode import load_image
    from cnnkit.data.transforms import conform

    x = conform(torch.from_numpy(load_image(digit_png, 1)).permute(2, 0, 1)[None], (28, 28, 1))
    heat = explain.gradcam(model, x, target=3)
    photo = Image.open(digit_png).convert("RGB").resize((252, 252), Image.Resampling.NEAREST)
    expected = np.asarray(explain.overlay(photo, heat), dtype=int)
    assert result.box == photo_box(252, 252)
    drawn = Image.open(tmp_path / "cam.png").crop(result.box)  # the photo, without the title and the colour bar
    assert np.abs(np.asarray(drawn, dtype=int) - expected).max() <= 1


def test_heat_map_picture_has_a_title_and_a_colour_scale(trained_seed, digit_png, tmp_path):
    model, _ = trained_seed
    result = explain_file(model, digit_png, "saliency", out=tmp_path / "s.png")
    picture = np.asarray(Image.open(tmp_path / "s.png").convert("RGB"), dtype=int)
    left, top, right, bottom = result.box
    assert (picture[:top, left:right] < 80).any()  # dark text above the photo: the title
    # A column of the bar beside the photo runs through the one colour map, 1 at the top to 0 at the bottom.
    column = next(c for c in range(right, picture.shape[1]) if (picture[top:bottom, c] != 255).any(axis=1).all())
    bar = picture[top:bottom, column + 3]
    expected = (explain.colorize(np.linspace(1, 0, bottom - top)[:, None])[:, 0] * 255).round()
    assert np.abs(bar - expected).max() <= 1
    assert explain.HEATMAP_COLORMAP == "jet"  # the CLI, the report and the server draw through the same map


def test_explain_as_a_user_runs_it(trained_seed, digit_png, tmp_path):
    _, model_path = trained_seed
    result = run_cli("explain", str(model_path), str(digit_png), "--method", "saliency", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["path"] == "seven-saliency.png" and (tmp_path / "seven-saliency.png").exists()  # default name
    assert report["predicted"] == report["target"] and 0 < report["probability"] <= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "conv9"], "model has no layer 'conv9'; its convolutions are: conv2d, conv2d_1, conv2d_2"),
        (["--class", "cat"], "unknown class 'cat'; the model's classes are: 0, 1, 2"),
        (["--method", "saliency", "--layer", "conv2d"], "saliency explains pixels, not a layer: drop --layer"),
        (["--method", "feature-maps", "--layer", "dense"], "do not output feature maps"),
    ],
)
def test_explain_bad_requests_are_one_line_errors(trained_seed, digit_png, tmp_path, args, message, capsys):
    _, model_path = trained_seed
    out = tmp_path / "out.png"
    assert main(["explain", str(model_path), str(digit_png), *args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_explain_unreadable_image(trained_seed, tmp_path, capsys):
    _, model_path = trained_seed
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert main(["explain", str(model_path), str(tmp_path / "bad.png")]) == 1
    assert "not an image cnnkit can read" in capsys.readouterr().err
