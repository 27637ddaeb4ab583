"""Prediction at scale: backends that agree, the ONNX cache, order, streaming, TTA, thread safety."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit._io import file_sha256
from cnnkit.runtime import prefer_channels_last
from conftest import SRC, run_cli, run_main


def _write_digits(folder, digits, n, start=0):
    """``n`` digits test images as 28x28 PNGs named by index; returns their paths and labels."""
    _, (x_test, y_test) = digits
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"{i:05d}.png"
        Image.fromarray((x_test[i % len(x_test), :, :, 0] * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths, [str(int(y_test[i % len(y_test)])) for i in range(start, start + n)]


@pytest.fixture
def model_copy(trained_seed, tmp_path):
    """The trained model in its own folder, so the ONNX cache next to it belongs to this test."""
    path = tmp_path / "model" / "model.safetensors"
    path.parent.mkdir()
    shutil.copy(trained_seed[1], path)
    return path


class _Spy:
    """A predictor that records the batches it sees (probabilities: a fixed function of the pixels)."""

    backend, description = "spy", "spy"

    def __init__(self, image_shape=(28, 28, 1), classes=4):
        self.image_shape, self.class_names, self.batches = image_shape, [f"c{i}" for i in range(classes)], []

    def predict_proba(self, images):
        self.batches.append(len(images))
        logits = np.stack([images.mean(axis=(1, 2, 3)) * (i + 1) for i in range(len(self.class_names))], axis=1)
        return torch.softmax(torch.from_numpy(logits), 1).numpy()


def test_onnx_backend_equals_torch_backend(model_copy, tmp_path, digits):
    paths, labels = _write_digits(tmp_path / "images" / "sub", digits, 20)
    Image.fromarray((digits[1][0][0, :, :, 0] * 255).astype(np.uint8)).resize((90, 70)).convert("RGB").save(
        tmp_path / "images" / "big.jpg"
    )
    (tmp_path / "images" / "sub" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rows = {}
    for backend in ("torch", "onnx"):
        result = run_cli("predict", str(model_copy), str(tmp_path / "images"), "--backend", backend, "--format", "json")
        assert result.returncode == 0, result.stderr
        assert "skipped" in result.stderr and "00003.png" in result.stderr
        rows[backend] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (model_copy.parent / "model.cache.onnx").exists()
    expected_order = [str(tmp_path / "images" / "big.jpg")] + [str(p) for p in paths if p.name != "00003.png"]
    assert [r["path"] for r in rows["torch"]] == [r["path"] for r in rows["onnx"]] == expected_order
    for t, o in zip(rows["torch"], rows["onnx"]):
        assert t["labels"] == o["labels"]
        np.testing.assert_allclose(t["probabilities"], o["probabilities"], atol=1e-4)
    correct = sum(r["labels"][0] == label for r, label in zip(rows["onnx"][1:], np.delete(labels, 3)))
    assert correct >= 15  # the trained model, not noise


def test_onnx_cache_is_keyed_by_the_model_file(model_copy, monkeypatch, trained_seed, digits):
    import cnnkit.export as export
    from cnnkit import models
    from cnnkit.inference import OnnxPredictor, TorchPredictor, cache_path, load_predictor

    auto = load_predictor(model_copy)  # auto on a CPU machine: ONNX, exported and cached
    assert isinstance(auto, OnnxPredictor) and cache_path(model_copy).exists()
    x = np.ascontiguousarray(digits[1][0][:8].transpose(0, 3, 1, 2))

    def no_export(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(export, "build_onnx", no_export)
        np.testing.assert_allclose(load_predictor(model_copy, "onnx").predict_proba(x), auto.predict_proba(x), atol=0)
    # Another model in the same file: the cached export is stale and must not answer for it.
    other = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    other.class_names = trained_seed[0].class_names
    other.save(model_copy)
    rebuilt = load_predictor(model_copy, "onnx").predict_proba(x)
    np.testing.assert_allclose(rebuilt, TorchPredictor(models.load_model(model_copy)).predict_proba(x), atol=1e-4)
    assert not np.allclose(rebuilt, auto.predict_proba(x), atol=1e-3)
    # A damaged cache is rebuilt with a warning, never trusted.
    cache_path(model_copy).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding the ONNX cache"):
        np.testing.assert_allclose(load_predictor(model_copy, "onnx").predict_proba(x), rebuilt, atol=1e-6)


def test_a_model_in_a_read_only_folder_caches_its_export_in_the_data_cache(model_copy, monkeypatch, tmp_path):
    import cnnkit._io
    import cnnkit.export as export
    from cnnkit.inference import OnnxPredictor, cache_path, load_predictor
    from cnnkit.onnx_predictor import cpu_onnx_predictor, shared_cache_path

    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "data"))
    write = cnnkit._io.atomic_write_bytes
    unwritable = [model_copy.parent]

    def read_only(path, data):  # the tests run as root, whom chmod does not stop
        if Path(path).parent in unwritable:
            raise PermissionError(13, "Permission denied", str(path))
        return write(path, data)

    monkeypatch.setattr(cnnkit._io, "atomic_write_bytes", read_only)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cache that works says nothing
        first = load_predictor(model_copy)
    shared = shared_cache_path(file_sha256(model_copy))
    assert isinstance(first, OnnxPredictor) and shared.is_file() and not cache_path(model_copy).exists()
    assert shared.parent == tmp_path / "data" / "onnx"
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with monkeypatch.context() as m:
        m.setattr(export, "build_onnx", lambda *a, **kw: pytest.fail("the shared cache should have been used"))
        np.testing.assert_array_equal(load_predictor(model_copy).predict_proba(x), first.predict_proba(x))
    np.testing.assert_array_equal(cpu_onnx_predictor(model_copy).predict_proba(x), first.predict_proba(x))
    # Nowhere to write: the export runs from memory, with a warning naming both places.
    shared.unlink()
    unwritable.append(shared.parent)
    with pytest.warns(
        UserWarning, match="cannot cache the ONNX export at .*model.cache.onnx or .*using it from memory"
    ):
        np.testing.assert_allclose(load_predictor(model_copy).predict_proba(x), first.predict_proba(x), atol=1e-6)


def test_auto_falls_back_to_torch_when_the_model_does_not_export(model_copy, monkeypatch):
    import cnnkit.export.exporter as exporter
    from cnnkit.errors import ExportError
    from cnnkit.inference import load_predictor

    def unsupported(model, opset=17):
        raise ExportError("model 'seed' cannot be exported to ONNX: Unsupported: an op")

    monkeypatch.setattr(exporter, "onnx_graph", unsupported)
    with pytest.warns(UserWarning, match="cannot be exported to ONNX.*predicting with PyTorch instead"):
        assert load_predictor(model_copy, "auto").backend == "torch"
    with pytest.raises(ExportError, match="cannot be exported"):
        load_predictor(model_copy, "onnx")


def test_order_is_kept_and_errors_stay_in_place(tmp_path, digits):
    from cnnkit.predict import predict_files

    _write_digits(tmp_path / "b", digits, 5)
    _write_digits(tmp_path / "a" / "deep", digits, 4, start=10)
    (tmp_path / "a" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "a" / "notes.txt").write_text("ignored: not an image name")
    single = tmp_path / "b" / "00002.png"
    inputs = [tmp_path, str(tmp_path / "b" / "*.png"), single]
    expected = (
        [tmp_path / "a" / "broken.png"]
        + [tmp_path / "a" / "deep" / f"{i:05d}.png" for i in range(10, 14)]
        + [tmp_path / "b" / f"{i:05d}.png" for i in range(5)] * 2
        + [single]
    )
    runs = {}
    for workers in (0, 2):
        spy = _Spy()
        runs[workers] = list(predict_files(spy, inputs, top_k=2, batch_size=3, workers=workers))
        assert max(spy.batches) <= 3
    assert runs[0] == runs[2]
    assert [p.path for p in runs[0]] == [str(p) for p in expected]
    assert runs[0][0].error and "not an image" in runs[0][0].error
    assert all(p.error is None and len(p.labels) == 2 for p in runs[0][1:])


def test_spawned_workers_answer_as_forked_ones(tmp_path, digits, monkeypatch):
    """Off Linux the decoding workers are spawned (no fork on Windows; macOS forks unsafely with threads):
    that path, run here, answers as the forked one and as decoding in this process."""
    import cnnkit.predict as predict

    _write_digits(tmp_path, digits, 150)
    (tmp_path / "00070.png").write_bytes(b"broken")
    runs = {}
    for method, workers in (("fork", 0), ("fork", 2), ("spawn", 2)):
        monkeypatch.setattr(predict, "_START_METHOD", method)
        runs[method, workers] = list(predict.predict_files(_Spy(), [tmp_path], top_k=2, batch_size=1, workers=workers))
    assert runs["spawn", 2] == runs["fork", 2] == runs["fork", 0] and len(runs["fork", 0]) == 150
    assert runs["spawn", 2][70].error is not None


def test_workers_are_sent_many_batches_at_a_time_and_answer_as_this_process(tmp_path, digits):
    """Decoding workers get chunks of several batches (fewer round trips); the model still sees one batch at
    a time, and the answers, their order and the unreadable files' places are those of decoding here."""
    from cnnkit.predict import _chunk_size, predict_files

    _write_digits(tmp_path, digits, 150)
    for i in (0, 70, 149):  # one in the first chunk, one mid-chunk, the last file
        (tmp_path / f"{i:05d}.png").write_bytes(b"broken")
    assert _chunk_size(1, (28, 28, 1)) == 64 and _chunk_size(64, (224, 224, 3)) == 64
    runs, spies = {}, {}
    for workers in (0, 2):
        spies[workers] = _Spy()
        runs[workers] = list(predict_files(spies[workers], [tmp_path], top_k=3, batch_size=1, workers=workers))
    assert runs[2] == runs[0] and len(runs[0]) == 150
    assert [p.error is not None for p in runs[0]] == [i in (0, 70, 149) for i in range(150)]
    assert spies[2].batches == spies[0].batches == [1] * 147


# The measurement runs in a fresh process: tracemalloc counts every allocation of the process it runs
# in, so in the test process the threads and caches other tests left behind would be counted too.
_MEASURE_PREDICTION = """
import json, sys, tracemalloc
from pathlib import Path
import numpy as np, torch
import cnnkit.predict as predict

class Spy:  # probabilities: a fixed function of the pixels; records the batches it sees
    backend = description = "spy"
    image_shape, class_names = (28, 28, 1), ["c0", "c1", "c2", "c3"]
    def __init__(self):
        self.batches = []
    def predict_proba(self, images):
        self.batches.append(len(images))
        logits = np.stack([images.mean(axis=(1, 2, 3)) * (i + 1) for i in range(4)], axis=1)
        return torch.softmax(torch.from_numpy(logits), 1).numpy()

decoded, real_load = [0], predict.load_input
def counting_load(path, image_shape):
    decoded[0] += 1
    return real_load(path, image_shape)
predict.load_input = counting_load

results = {}
for folder in sys.argv[1:]:
    decoded[0], spy = 0, Spy()
    tracemalloc.start()
    stream = predict.predict_files(spy, [folder], batch_size=32, workers=0)
    first = next(stream)
    first_ok, decoded_first = first.error is None, decoded[0]
    count = 1 + sum(1 for _ in stream)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    results[folder] = dict(first_ok=first_ok, decoded_first=decoded_first, count=count, decoded=decoded[0],
                           largest_batch=max(spy.batches), peak=peak)
print(json.dumps(results))
"""


def test_memory_stays_flat_and_batches_are_bounded(tmp_path, digits):
    """A 10x larger folder keeps no more image data: files are walked, decoded and predicted a batch at a time."""
    small, large = tmp_path / "small", tmp_path / "large"
    for folder, n in ((small, 150), (large, 1500)):
        _write_digits(folder, digits, n)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    result = subprocess.run([sys.executable, "-c", _MEASURE_PREDICTION, str(small), str(large)],
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.splitlines()[-1])
    peaks = {}
    for folder in (small, large):
        m = measured[str(folder)]
        assert m["first_ok"] and m["decoded_first"] <= 32  # the first answer comes after one batch, not the folder
        assert m["count"] == m["decoded"] == len(list(folder.iterdir())) and m["largest_batch"] == 32
        peaks[folder] = m["peak"]
    # What may grow is the sorted listing of the one folder (a name per file); one decoded image
    # alone is 28 * 28 * 4 = 3,136 bytes, so keeping images would cost far more per file.
    per_file = (peaks[large] - peaks[small]) / 1350
    assert per_file < 300, peaks


def test_tta_averages_the_mirror_image(trained_seed, tmp_path, digits):
    from cnnkit.inference import TorchPredictor
    from cnnkit.predict import predict_files

    paths, _ = _write_digits(tmp_path, digits, 6)
    predictor = TorchPredictor(trained_seed[0])
    pixels = (digits[1][0][:6] * 255).astype(np.uint8)  # what the PNGs hold
    x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) / 255
    expected = (predictor.predict_proba(x) + predictor.predict_proba(x[..., ::-1])) / 2
    got = list(predict_files(predictor, paths, top_k=10, tta=True, workers=0))
    for row, p in zip(expected, got):
        np.testing.assert_allclose(sorted(row, reverse=True), p.probabilities, atol=1e-5)
        assert p.labels[0] == str(int(row.argmax()))


def test_a_loaded_model_runs_channels_last_and_answers_as_in_nchw(model_copy, digits):
    import copy

    from cnnkit import layers, models
    from cnnkit.evaluate.core import predict_logits
    from cnnkit.inference import TorchPredictor

    (_, _), (images, _) = digits
    x = torch.from_numpy(np.ascontiguousarray(images[:50].transpose(0, 3, 1, 2)))  # (50, 1, 28, 28)
    model = models.load_model(model_copy)
    conv = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)][1].conv.weight  # (64, 32, 3, 3)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        expected = nchw(x)
    np.testing.assert_allclose(TorchPredictor(model).predict_proba(x.numpy()), expected.softmax(1).numpy(), atol=1e-5)
    torch.testing.assert_close(predict_logits(model, x), expected, rtol=1e-4, atol=1e-4)

    with torch.inference_mode():  # converting there must not make weights that can never train again
        assert prefer_channels_last(nchw)
    assert not any(p.is_inference() for p in nchw.parameters())
    nchw(x).sum().backward()
    dense = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3)])
    assert not prefer_channels_last(dense)  # nothing to convert: left as it is


def test_predictors_are_thread_safe_and_check_shapes(model_copy, digits):
    from cnnkit.errors import ShapeError
    from cnnkit.inference import Predictor, load_predictor

    x = np.ascontiguousarray(digits[1][0][:64].transpose(0, 3, 1, 2))
    for backend in ("torch", "onnx"):
        predictor = load_predictor(model_copy, backend)
        assert isinstance(predictor, Predictor) and predictor.image_shape == (28, 28, 1)
        assert predictor.class_names == [str(i) for i in range(10)]
        serial = [predictor.predict_proba(x[i::4]) for i in range(4)]
        results = [None] * 4

        def work(i, predictor=predictor, results=results):
            for _ in range(5):
                results[i] = predictor.predict_proba(x[i::4])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for a, b in zip(serial, results):
            np.testing.assert_allclose(a, b, atol=1e-6)
        assert predictor.predict_proba(x[:0]).shape == (0, 10)
        with pytest.raises(ShapeError, match=r"takes \(batch, 1, 28, 28\) images, got \(2, 3, 28, 28\)"):
            predictor.predict_proba(np.zeros((2, 3, 28, 28), np.float32))


def test_predictors_take_the_nhwc_arrays_load_data_returns(model_copy, digits):
    """predict_proba takes Keras' NHWC arrays (what datasets.load_data returns) as well as (B, C, H, W)."""
    from cnnkit.inference import load_predictor

    nhwc = digits[1][0][:16]  # (16, 28, 28, 1)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    for backend in ("torch", "onnx"):
        predictor = load_predictor(model_copy, backend)
        np.testing.assert_allclose(predictor.predict_proba(nhwc), predictor.predict_proba(nchw), atol=1e-6)


def test_predict_cli_errors(model_copy, tmp_path, capsys):
    from cnnkit.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["predict", str(model_copy), str(tmp_path / "empty"), "--backend", "torch"]) == 1
    assert capsys.readouterr().err == f"cnnkit: error: no image files in {tmp_path / 'empty'}\n"
    assert (
        main(["predict", str(model_copy), str(tmp_path / "empty"), str(tmp_path / "nope.png"), "--backend", "torch"])
        == 1
    )
    assert capsys.readouterr().err == f"cnnkit: error: {tmp_path / 'nope.png'}: no such file or folder\n"


def test_predict_runs_cnnkits_own_torchscript_export_and_nothing_else(model_copy, tmp_path, digits):
    """`cnnkit export --format torchscript` writes a file that `cnnkit predict` runs, with its class names."""
    from cnnkit.export import export_model

    exported = export_model(model_copy, "torchscript", data="digits").path
    assert exported.name == "model.torchscript.pt"
    paths, labels = _write_digits(tmp_path / "images", digits, 8)
    rows = {}
    for name, model in (("torchscript", exported), ("torch", model_copy)):
        result = run_cli("predict", str(model), str(tmp_path / "images"), "--format", "json", "--backend", "torch")
        assert result.returncode == 0, result.stderr
        rows[name] = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows["torchscript"]] == [str(p) for p in paths]
    for t, s in zip(rows["torch"], rows["torchscript"]):
        assert t["labels"] == s["labels"]
        np.testing.assert_allclose(t["probabilities"], s["probabilities"], atol=1e-4)
    # A TorchScript archive cnnkit did not write is never loaded; nor is the export run on ONNX Runtime.
    foreign = tmp_path / "other.torchscript.pt"
    with warnings.catch_warnings():  # TorchScript's deprecation notices
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(foreign))
    not_a_zip = tmp_path / "text.torchscript.pt"
    not_a_zip.write_text("hello")
    for model, message in ((foreign, "is a TorchScript archive that cnnkit did not export"),
                           (not_a_zip, "is not a TorchScript archive"),
                           (exported, "is a TorchScript export: it runs in TorchScript")):  # fmt: skip
        flags = ["--backend", "onnx"] if model == exported else []
        result = run_main("predict", str(model), str(paths[0]), *flags)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr
