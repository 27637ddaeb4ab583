"""Pretrained weights: torchvision state dicts, cnnkit model files, ImageNet downloads, and refusing pickles.

Nothing here touches the network: torchvision-format files are built locally, and the
ImageNet download is served by a stand-in for urlopen (or refused by a closed local port).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import urllib.error

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from cnnkit import models
from cnnkit.errors import ConfigError, ModelFileError
from cnnkit.models import pretrained
from cnnkit.models import weights as weights_module
from cnnkit.models.weights import load_pretrained


@pytest.fixture(scope="module")
def resnet18_files(tmp_path_factory):
    """torchvision's resnet18 (random init) saved the two ways torchvision users save weights."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    folder = tmp_path_factory.mktemp("tv")
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, folder / "resnet18.safetensors")
    torch.save(net.state_dict(), folder / "resnet18.pth")
    return state, folder / "resnet18.safetensors", folder / "resnet18.pth"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cnnkit cache and torch hub folder, and no offline switch."""
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CNNKIT_OFFLINE", raising=False)
    return tmp_path / "cache" / "weights"


def test_weights_trained_on_0_to_255_pixels_start_a_model_fed_0_to_1_pixels(trained_seed, tmp_path):
    source, _ = trained_seed
    keras_style = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    keras_style.load_state_dict(source.state_dict())
    keras_style.class_names, keras_style.pixel_max = source.class_names, 255.0  # as Model.fit on 0..255 makes it
    keras_style.set_normalization({"mean": [30.0], "std": [60.0]})  # in 0..255 units
    path = tmp_path / "keras_style.safetensors"
    keras_style.save(path)
    fresh = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    fresh.class_names = source.class_names
    report = load_pretrained(fresh, path)
    assert fresh.pixel_max == 1.0 and report.normalization["mean"] == pytest.approx([30 / 255])
    assert report.normalization["std"] == pytest.approx([60 / 255])
    x = torch.rand(3, 1, 28, 28)  # cnnkit's [0, 1] pixels
    torch.testing.assert_close(fresh.eval()(x), keras_style.eval()(x * 255), rtol=1e-4, atol=1e-4)
    plain = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    plain.class_names = source.class_names  # the same classes: the head is kept too
    keras_style.set_normalization(None)  # no normalization of its own: the scale alone
    keras_style.save(path)
    scaled = load_pretrained(plain, path).normalization
    assert scaled["mean"] == pytest.approx([0.0]) and scaled["std"] == pytest.approx([1 / 255])
    torch.testing.assert_close(plain.eval()(x), keras_style.eval()(x * 255), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_torchvision_state_dict_loads_into_the_wrapper(resnet18_files, fmt):
    state, st_path, pth_path = resnet18_files
    model = models.create_model("resnet18", num_classes=3, in_channels=3, input_size=32)
    report = load_pretrained(model, st_path if fmt == "safetensors" else pth_path)
    ours = model.net.state_dict()
    body = [k for k in state if not k.startswith("fc.")]
    assert all(torch.equal(ours[k], state[k]) for k in body)
    assert ours["fc.weight"].shape == (3, 512)  # the new head for 3 classes, not ImageNet's 1000
    assert report.head_replaced and report.loaded == len(body)
    # torchvision's families expect torchvision's ImageNet preprocessing, which now travels with the model.
    assert model.normalization["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert model.normalization["std"] == pytest.approx([0.229, 0.224, 0.225])


def test_grey_model_sums_the_rgb_filters(resnet18_files):
    state, st_path, _ = resnet18_files
    grey = models.create_model("resnet18", num_classes=4, in_channels=1, input_size=32)
    report = load_pretrained(grey, st_path)
    torch.testing.assert_close(grey.net.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert "summed" in report.first_conv
    assert grey.normalization["mean"] == pytest.approx([0.449])
    # The summed filter responds to a grey image exactly as the RGB filter did to its RGB copy.
    image = torch.rand(1, 1, 32, 32)
    rgb = torch.nn.functional.conv2d(image.expand(-1, 3, -1, -1), state["conv1.weight"], stride=2, padding=3)
    torch.testing.assert_close(grey.net.conv1(image), rgb, rtol=1e-4, atol=1e-4)


def test_a_cnnkit_model_starts_another_data_set(trained_seed, tmp_path):
    source, path = trained_seed
    # Same classes: the head is kept, so training goes on where it stopped.
    same = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    same.class_names = source.class_names
    assert not load_pretrained(same, path).head_replaced
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(same.eval()(x), source.eval()(x))
    # New classes: the body is kept, the head is new; RGB input gets the grey filters spread over RGB.
    rgb = models.create_model("seed", num_classes=3, in_channels=3, input_size=28)
    rgb.class_names = ["a", "b", "c"]
    report = load_pretrained(rgb, path)
    assert report.head_replaced and "spread over RGB" in report.first_conv
    conv = rgb.layers[0].conv.weight
    torch.testing.assert_close(conv.sum(dim=1, keepdim=True), source.layers[0].conv.weight)
    torch.testing.assert_close(rgb.layers[2].conv.weight, source.layers[2].conv.weight)
    # A different architecture is refused, naming what the file holds.
    other = models.create_model("seed_wide", num_classes=3, in_channels=1)
    with pytest.raises(ConfigError, match="does not fit seed_wide: other shapes: .*holds a 'seed' model.*--model seed"):
        load_pretrained(other, path)
    bigger = models.create_model("seed", num_classes=3, in_channels=1, input_size=32)
    with pytest.raises(ConfigError, match="trained on 28x28 images: use --image-size 28"):
        load_pretrained(bigger, path)


def test_weights_name_a_run_as_predict_does(trained_seed, tmp_path, monkeypatch):
    """`--weights seed-digits` (a run's prefix), its folder or `latest`: a shell glob would expand to several runs."""
    import shutil

    source, path = trained_seed
    run = tmp_path / "runs" / "seed-digits-20261203-101500"
    run.mkdir(parents=True)
    shutil.copy(path, run / "model.safetensors")
    (run / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    x = torch.rand(2, 1, 28, 28)
    for name in (str(run), "seed-digits", "latest"):
        model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
        model.class_names = source.class_names
        load_pretrained(model, name)
        torch.testing.assert_close(model.eval()(x), source.eval()(x))
    with pytest.raises(ModelFileError, match="no such weights file .*a run"):
        load_pretrained(models.create_model("seed", num_classes=10), "seed-faces")


def test_a_file_for_another_architecture_is_refused(resnet18_files):
    _, st_path, _ = resnet18_files
    model = models.create_model("resnet9", num_classes=3)
    with pytest.raises(ConfigError, match="resnet18.safetensors does not fit resnet9: missing from the file"):
        load_pretrained(model, st_path)


class _RunsCode:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"conv1.weight": _RunsCode(marker)}, protocol=2))
    zipped = tmp_path / "zipped.pth"
    torch.save({"conv1.weight": _RunsCode(marker)}, zipped)
    model = models.create_model("resnet18", num_classes=3)
    for path in (legacy, zipped):
        with pytest.raises(ModelFileError, match="was refused: it holds Python objects other than tensors"):
            load_pretrained(model, path)
    assert not marker.exists()
    (tmp_path / "old.pkl").write_bytes(pickle.dumps({"w": 1}, protocol=0))  # not even opened by torch.load
    with pytest.raises(ModelFileError, match="neither a safetensors file nor a PyTorch"):
        load_pretrained(model, tmp_path / "old.pkl")
    with pytest.raises(ModelFileError, match="no such weights file"):
        load_pretrained(model, tmp_path / "missing.pth")


def test_checkpoint_wrappers_and_ddp_prefixes_are_unwrapped(resnet18_files, tmp_path):
    state, _, _ = resnet18_files
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pth")
    model = models.create_model("resnet18", num_classes=3)
    load_pretrained(model, tmp_path / "ckpt.pth")
    assert torch.equal(model.net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


# -- ImageNet weights: the real torchvision URL and hash, a stand-in for the network -----------
def _fake_imagenet(monkeypatch, payload: bytes, *, good_hash: bool = True) -> pretrained.ImagenetWeights:
    real = pretrained.imagenet_weights("mobilenet_v3_small")
    assert real.url.startswith("https://download.pytorch.org/models/") and real.sha256_prefix in real.url
    prefix = hashlib.sha256(payload).hexdigest()[:8] if good_hash else "00000000"
    spec = dataclasses.replace(real, url=f"https://download.example/models/mobilenet_v3_small-{prefix}.pth",
                               sha256_prefix=prefix)  # fmt: skip
    monkeypatch.setattr(weights_module, "imagenet_weights", lambda name: spec)
    return spec


class _Response(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _mobilenet_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), buffer)
    return buffer.getvalue()


def test_imagenet_weights_download_once_with_checksum(cache, monkeypatch):
    payload = _mobilenet_bytes()
    spec = _fake_imagenet(monkeypatch, payload)
    calls = []

    def urlopen(url, timeout):
        calls.append((url, timeout))
        return _Response(payload)

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", urlopen)
    for _ in range(2):
        model = models.create_model("mobilenet_v3_small", num_classes=5, in_channels=1, input_size=32)
        report = load_pretrained(model, "imagenet", verbose=False)
    assert calls == [(spec.url, pretrained.TIMEOUT_S)]  # downloaded once, with a timeout
    assert (cache / spec.filename).read_bytes() == payload
    assert report.origin == f"ImageNet weights {spec.enum}" and report.head_replaced
    assert model.normalization["std"] == pytest.approx([sum(spec.std) / 3])


def test_a_download_with_the_wrong_checksum_keeps_nothing(cache, monkeypatch):
    _fake_imagenet(monkeypatch, b"", good_hash=False)
    monkeypatch.setattr(pretrained.urllib.request, "urlopen", lambda url, timeout: _Response(b"not the weights"))
    with pytest.raises(ModelFileError, match="does not match its SHA-256 prefix 00000000.*nothing was kept"):
        load_pretrained(models.create_model("mobilenet_v3_small", num_classes=5), "imagenet", verbose=False)
    assert not cache.exists() or not any(cache.iterdir())


def test_offline_imagenet_is_a_clear_error_not_a_hang(cache, monkeypatch):
    spec = _fake_imagenet(monkeypatch, b"")
    # A closed local port: the connection is refused at once, as on a machine without network.
    spec = dataclasses.replace(spec, url=f"http://127.0.0.1:9/{spec.filename}")
    monkeypatch.setattr(weights_module, "imagenet_weights", lambda name: spec)
    model = models.create_model("mobilenet_v3_small", num_classes=5)
    with pytest.raises(ModelFileError) as error:
        load_pretrained(model, "imagenet", verbose=False)
    message = str(error.value)
    assert f"cannot reach {spec.url}" in message
    assert f"Download {spec.url} and put it in {cache}/ as {spec.filename}" in message
    # Whatever the network does, the attempt is bounded by a short timeout.
    seen = []

    def stalled(url, timeout):
        seen.append(timeout)
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", stalled)
    with pytest.raises(ModelFileError, match="cannot reach"):
        load_pretrained(model, "imagenet", verbose=False)
    assert seen and 0 < seen[0] <= 30


def test_imagenet_needs_a_model_that_has_it():
    with pytest.raises(ConfigError, match="resnet9 has no published ImageNet weights; .*resnet18"):
        load_pretrained(models.create_model("resnet9", num_classes=3), "imagenet")


def test_cli_offline_imagenet_error_names_file_url_and_folder(tmp_path, cache, monkeypatch, capsys):
    from cnnkit.cli import main  # in-process: a subprocess would only add torch's start-up time

    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    argv = ["train", "--model", "resnet18", "--weights", "imagenet", "--data", "digits", "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and line.startswith("cnnkit: error: ImageNet weights for resnet18")
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in line
    assert f"{cache}/ as resnet18-f37072fd.pth" in line
    assert not (tmp_path / "run").exists()  # nothing written before the weights are there
