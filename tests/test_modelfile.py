"""The model file: save -> load gives the same model; bad files get one clear error, never an unpickle."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cnnkit import modelfile, models
from cnnkit.errors import ModelFileError


def test_save_load_identical_predictions_and_metadata(trained_seed, digits):
    model, path = trained_seed
    _, (x_test, _) = digits
    again = models.load_model(path)
    np.testing.assert_array_equal(again.predict(x_test[:50]), model.predict(x_test[:50]))
    assert again.class_names == [str(i) for i in range(10)]
    assert again.input_shape == (None, 28, 28, 1)
    assert again.count_params() == 93_322
    assert again.compiled  # Keras' load_model restores the compile settings
    loss, acc = again.evaluate(x_test, digits[1][1], verbose=0)
    assert acc > 0.5
    meta = modelfile.read_metadata(path)
    assert meta["architecture"]["class_name"] == "Sequential"
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["output_activation"] == "softmax"


def test_registry_model_round_trip(tmp_path):
    model = models.create_model("seed", num_classes=3, in_channels=1, input_size=32)
    model.save(tmp_path / "m.safetensors")
    again = models.load_model(tmp_path / "m.safetensors")
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(again(x), model.eval()(x))


def test_pickle_files_are_refused_without_unpickling(tmp_path, monkeypatch):
    torch_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, torch_file)
    raw_pickle = tmp_path / "model.pkl"
    raw_pickle.write_bytes(pickle.dumps({"w": 1}))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled!"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled!"))
    for path in (torch_file, raw_pickle):
        with pytest.raises(ModelFileError, match="pickle file.*never unpickles"):
            models.load_model(path)


def test_truncated_file(trained_seed, tmp_path):
    _, path = trained_seed
    data = path.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="truncated"):
            models.load_model(bad)


def test_tampered_weights_fail_the_checksum(trained_seed, tmp_path):
    _, path = trained_seed
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the last weight
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        models.load_model(bad)


def _rewrite_metadata(src, dst, edit):
    tensors = modelfile.read_weights(src)
    from safetensors import safe_open

    with safe_open(src, framework="pt") as f:
        header = dict(f.metadata())
    edit(header)
    save_file(tensors, dst, metadata=header)


def test_tampered_metadata_and_newer_versions(trained_seed, tmp_path):
    _, path = trained_seed
    cases = {
        "newer": (lambda h: h.update(format_version="7"), "newer cnnkit.*format 7"),
        "json": (lambda h: h.update(cnnkit="{not json"), "not valid JSON"),
        "foreign": (lambda h: h.pop("format"), "not a cnnkit model"),
        "arch": (lambda h: h.update(cnnkit=json.dumps({**json.loads(h["cnnkit"]), "architecture": {"class_name": "Nope"}})),
                 "cannot rebuild"),
    }  # fmt: skip
    for name, (edit, message) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        _rewrite_metadata(path, bad, edit)
        with pytest.raises(ModelFileError, match=message):
            models.load_model(bad)


def test_weights_that_do_not_fit_the_architecture(trained_seed, tmp_path):
    _, path = trained_seed
    meta = modelfile.read_metadata(path)
    tensors = modelfile.read_weights(path)
    tensors["layers.0.conv.bias"] = torch.zeros(5)
    meta["weights_sha256"] = modelfile._weights_digest(tensors)
    header = {"format": "cnnkit", "format_version": "1", "cnnkit": json.dumps(meta)}
    save_file(tensors, tmp_path / "bad.safetensors", metadata=header)
    with pytest.raises(ModelFileError, match="do not fit"):
        models.load_model(tmp_path / "bad.safetensors")


def test_missing_empty_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        models.load_model(tmp_path / "nope.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty or truncated"):
        models.load_model(tmp_path / "empty.safetensors")
    with pytest.raises(ModelFileError, match="is a folder"):
        models.load_model(tmp_path)
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ModelFileError, match="truncated"):
        models.load_model(tmp_path / "huge.safetensors")
    (tmp_path / "text.safetensors").write_text("hello, this is not a model")
    with pytest.raises(ModelFileError, match="not a safetensors model file"):
        models.load_model(tmp_path / "text.safetensors")


def test_a_failed_save_keeps_the_previous_file(trained_seed, tmp_path, monkeypatch):
    model, path = trained_seed
    target = tmp_path / "model.safetensors"
    model.save(target)
    before = target.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        model.save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left behind
    models.load_model(target)


def test_custom_module_cannot_be_saved_whole_but_weights_can(tmp_path):
    model = models.Model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), input_shape=(2, 2, 1))
    with pytest.raises(Exception, match="cannot rebuild"):
        model.save(tmp_path / "m.safetensors")
    model.save_weights(tmp_path / "w.safetensors")
    other = models.Model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), input_shape=(2, 2, 1))
    other.load_weights(tmp_path / "w.safetensors")
    torch.testing.assert_close(other.net[1].weight, model.net[1].weight)


def test_load_weights_leaves_a_conv_model_channels_last_like_load_model(tmp_path):
    # the layout fit and load_model leave, which a CPU predicts fastest in (mobilenet_v3_small: 4.5x);
    # load_state_dict alone keeps a fresh model's NCHW weights
    trained = models.create_model("lenet5", num_classes=3, in_channels=3, input_size=32)
    trained.save_weights(tmp_path / "w.safetensors")
    model = models.create_model("lenet5", num_classes=3, in_channels=3, input_size=32)
    model.to(memory_format=torch.contiguous_format)  # a model made some other way: NCHW
    model.load_weights(tmp_path / "w.safetensors")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))


@pytest.mark.parametrize("name", ["lenet5", "resnet9", "mobilenet_v3_small"])
def test_create_model_gives_the_layout_fit_and_load_model_leave(name):
    # Before its first fit a zoo model predicted NCHW (mobilenet_v3_small 4.5x slower); the values are the same.
    model = models.create_model(name, num_classes=3, in_channels=3, input_size=32).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    fast = model.predict(x, verbose=0)
    model.to(memory_format=torch.contiguous_format)
    np.testing.assert_allclose(fast, model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
