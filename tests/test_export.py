"""Exports against eager PyTorch: ONNX and TorchScript round trips, parity, metadata, INT8, bad files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from conftest import run_cli


@pytest.fixture(scope="module")
def onnx_export(trained_seed, tmp_path_factory):
    """The trained article model exported to ONNX, checked on the digits test images."""
    from cnnkit.export import export_model

    _, path = trained_seed
    out = tmp_path_factory.mktemp("export") / "seed.onnx"
    return export_model(path, "onnx", out=out, data="digits")


def test_onnx_round_trip_parity_and_metadata(trained_seed, onnx_export, digits):
    import onnxruntime as ort

    from cnnkit._io import file_sha256

    model, path = trained_seed
    result = onnx_export
    assert result.parity.n == 359 and "digits test images" in result.parity.source
    assert result.parity.max_abs_diff <= 1e-4 and result.parity.argmax_agreement == 1.0
    props = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    assert json.loads(props["class_names"]) == [str(i) for i in range(10)]
    assert json.loads(props["input_shape"]) == [28, 28, 1]
    assert props["input_layout"] == "NCHW" and "[0, 1]" in props["input"] and "inside the graph" in props["input"]
    assert props["normalization_applied"] == "inside the graph" and "probabilities" in props["output"]
    assert props["source_sha256"] == file_sha256(path)
    # An independent oracle: ONNX Runtime on the raw file, at batch sizes the trace never saw,
    # against Keras-style model.predict on the NHWC arrays.
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 1, 28, 28]
    _, (x_test, _) = digits
    for n in (1, 7):
        got = session.run(None, {"images": np.ascontiguousarray(x_test[:n].transpose(0, 3, 1, 2))})[0]
        np.testing.assert_allclose(got, model.predict(x_test[:n], verbose=0), atol=1e-4, rtol=0)


def test_torchscript_round_trip(trained_seed, tmp_path, digits):
    from cnnkit.export import export_model

    model, path = trained_seed
    result = export_model(path, "torchscript", out=tmp_path / "seed.pt", data="digits")
    assert result.parity.passed and result.parity.n == 359
    extra = {"cnnkit.json": ""}
    with warnings.catch_warnings():  # PyTorch's notice that TorchScript is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(result.path), _extra_files=extra)  # our own file, just written
    metadata = json.loads(extra["cnnkit.json"])
    assert metadata["class_names"] == [str(i) for i in range(10)] and metadata["input_shape"] == [28, 28, 1]
    _, (x_test, _) = digits
    with torch.no_grad():
        got = loaded(torch.from_numpy(np.ascontiguousarray(x_test[:5].transpose(0, 3, 1, 2)))).numpy()
    np.testing.assert_allclose(got, model.predict(x_test[:5], verbose=0), atol=1e-4, rtol=0)


def test_pt2_round_trip_runs_with_the_torch_backend(trained_seed, tmp_path, digits):
    """``--format pt2``: torch.export's archive, parity-checked, run by predict/serve's torch backend."""
    from cnnkit.errors import ConfigError
    from cnnkit.export import export_model
    from cnnkit.inference import load_predictor

    model, path = trained_seed
    result = export_model(path, "pt2", out=tmp_path / "seed.pt2", data="digits")
    assert result.format == "pt2" and result.parity.passed and result.parity.n == 359
    extra = {"cnnkit.json": ""}
    program = torch.export.load(str(result.path), extra_files=extra)  # our own file, just written
    assert json.loads(extra["cnnkit.json"])["export_format"] == "pt2"
    _, (x_test, _) = digits
    images = torch.from_numpy(np.ascontiguousarray(x_test[:7].transpose(0, 3, 1, 2)))  # a batch the export never saw
    with torch.no_grad():
        np.testing.assert_allclose(program.module()(images).numpy(), model.predict(x_test[:7], verbose=0), atol=1e-4)
    predictor = load_predictor(result.path, backend="torch")
    assert predictor.backend == "pt2" and predictor.class_names == [str(i) for i in range(10)]
    np.testing.assert_allclose(predictor.predict_proba(x_test[:3]), model.predict(x_test[:3], verbose=0), atol=1e-4)
    with pytest.raises(ConfigError, match="is a .pt2 export: it runs in PyTorch"):
        load_predictor(result.path, backend="onnx")


def test_foreign_and_pickling_pt2_files_are_refused_before_loading(trained_seed, tmp_path):
    import zipfile

    from cnnkit.errors import ModelFileError
    from cnnkit.export import export_model
    from cnnkit.inference import load_predictor

    _, path = trained_seed
    foreign = tmp_path / "foreign.pt2"
    torch.export.save(torch.export.export(nn.Linear(2, 2), (torch.rand(1, 2),)), str(foreign))
    with pytest.raises(ModelFileError, match="cnnkit did not export"):
        load_predictor(foreign)
    good = export_model(path, "pt2", out=tmp_path / "seed.pt2").path
    pickling = tmp_path / "pickling.pt2"  # the same archive, its weights marked as pickles
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(pickling, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("_weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true')
            dst.writestr(item, data)
    with pytest.raises(ModelFileError, match="holds pickled objects"):
        load_predictor(pickling)
    (tmp_path / "text.pt2").write_text("not an archive")
    with pytest.raises(ModelFileError, match="not a readable .pt2 archive"):
        load_predictor(tmp_path / "text.pt2")


def test_exports_see_the_plain_model_not_the_fused_kernels(onnx_export):
    """kernels.fuse is the engine's and predictors' pass: the exported graph holds standard ONNX ops only."""
    graph = onnx.load(onnx_export.path).graph
    ops = {node.op_type for node in graph.node}
    assert {"Conv", "MaxPool", "Gemm", "Softmax"} <= ops and all(node.domain in ("", "ai.onnx") for node in graph.node)


class _Noisy(nn.Module):
    """A module with noise in eval mode: ONNX Runtime's random numbers are not torch's."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits + 10 * torch.randn_like(logits)


def test_a_disagreeing_export_fails_and_writes_nothing(tmp_path):
    from cnnkit.export import ParityError, export_model
    from cnnkit.models import Model

    model = Model(_Noisy(), input_shape=(8, 8, 1))
    with pytest.raises(ParityError, match="disagrees with the PyTorch model.*nothing was written"):
        export_model(model, "onnx", out=tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_op_that_does_not_export_is_a_clear_error(tmp_path, capfd):
    from cnnkit.errors import ExportError
    from cnnkit.export import ParityError, export_model
    from cnnkit.models import Model

    # A branch on the pixel values: torch.export captures one graph for every input, so it refuses it.
    with pytest.raises(ExportError, match="cannot be exported to ONNX: ") as error:
        export_model(Model(_PixelBranch(), input_shape=(7, 7, 1)), "onnx", out=tmp_path / "x.onnx")
    assert not isinstance(error.value, ParityError) and list(tmp_path.iterdir()) == []
    # torch's exporters print progress and graphs to stdout (some from C++): none of it gets out.
    assert capfd.readouterr().out == ""


class _PixelBranch(nn.Module):
    """Control flow on the data: no single graph computes it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(49, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits if x.mean() > 0.5 else -logits


def _registered():
    from cnnkit.models import list_models

    return list_models()


@pytest.mark.parametrize("name", _registered())
def test_every_registered_model_exports_to_onnx(name):
    """Every model in the zoo, at a small input size, with an odd class count, checked on 8 images."""
    from cnnkit.export import build_onnx, open_onnx
    from cnnkit.export.common import ReferenceData
    from cnnkit.models import create_model, get_model_entry

    entry = get_model_entry(name)
    size = max(getattr(entry, "min_input_size", 1), min(entry.input_size, 32))
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_channels=entry.in_channels, input_size=size).eval()
    h, w, c = model.image_shape
    images = torch.rand(8, c, h, w, generator=torch.Generator().manual_seed(0))
    reference = ReferenceData(images, None, images, "8 synthetic images", "8 synthetic images")
    payload, parity = build_onnx(model, source_sha256=None, reference=reference)  # alexnet included
    assert parity.passed and parity.n == 8
    exported = open_onnx(payload)
    assert exported.info.image_shape == (h, w, c)
    assert exported.run(images[:1].numpy()).shape == (1, 3)  # batch 1: the batch axis is dynamic


def test_int8_export_reports_accuracy_change_and_speed(trained_seed, tmp_path):
    from cnnkit.export import export_model
    from cnnkit.inference import load_predictor

    _, path = trained_seed
    result = export_model(path, "onnx", quantize="int8", out=tmp_path / "seed.int8.onnx", data="digits")
    report = result.quantization
    assert report.n == 359 and report.float_accuracy > 0.5 and report.int8_accuracy is not None
    assert abs(report.accuracy_change) < 0.05 and report.agreement > 0.9 and report.speedup > 0
    assert "accuracy" in str(report) and "speed-up" in str(report)
    props = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    assert (
        props["quantization"] == "int8" and "calibrated on 256 digits training images" in props["quantization_details"]
    )
    assert result.size < 0.5 * (path.stat().st_size)  # int8 weights: about a quarter of float32
    predictor = load_predictor(result.path)
    assert predictor.backend == "onnx" and "int8" in predictor.description


def test_corrupt_and_foreign_onnx_files_are_clear_errors(onnx_export, tmp_path):
    from cnnkit.errors import ModelFileError
    from cnnkit.inference import load_predictor

    data = onnx_export.path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.onnx").write_text("not a model")
    for name in ("cut.onnx", "text.onnx"):
        with pytest.raises(ModelFileError, match="not a readable ONNX model"):
            load_predictor(tmp_path / name)
    # Weights changed after export: the file still parses, but its self-check no longer holds.
    proto = onnx.load(onnx_export.path)
    weight = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    values = np.frombuffer(weight.raw_data, dtype=np.float32).copy()
    values[: len(values) // 2] *= -1
    weight.raw_data = values.tobytes()
    onnx.save(proto, tmp_path / "modified.onnx")
    with pytest.raises(ModelFileError, match="is damaged: it no longer computes"):
        load_predictor(tmp_path / "modified.onnx")
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "foreign.onnx")
    with pytest.raises(ModelFileError, match="has no cnnkit metadata"):
        load_predictor(tmp_path / "foreign.onnx")


def test_export_cli(trained_seed, tmp_path, capsys):
    from cnnkit.cli import main

    _, path = trained_seed
    model = tmp_path / "model.safetensors"
    model.write_bytes(path.read_bytes())
    result = run_cli("export", str(tmp_path))  # a run folder; the data set is unknown: synthetic images
    assert result.returncode == 0, result.stderr
    assert "parity on 64 synthetic images" in result.stdout and "argmax agreement 100.00%" in result.stdout
    assert f"exported onnx to {tmp_path / 'model.onnx'}" in result.stdout and (tmp_path / "model.onnx").exists()
    # Mistakes are one-line errors (in-process: the same main() the console script runs).
    capsys.readouterr()
    assert main(["export", str(model), "--format", "torchscript", "--quantize", "int8"]) == 1
    assert (
        capsys.readouterr().err
        == "cnnkit: error: --quantize int8 is for ONNX exports (ONNX Runtime static quantization)\n"
    )
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07" + b"\xff" * 64)
    assert main(["predict", str(corrupt), str(model)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cnnkit: error: {corrupt} is not a readable ONNX model") and err.count("\n") == 1


def test_a_run_trained_on_a_folder_exports_checked_on_its_own_test_split(tmp_path, capsys):
    """``cnnkit export RUN --quantize int8`` on a folder-trained run: parity and INT8 accuracy on the
    run's recorded test split (split.json), calibration on its training split; ``--data FOLDER`` works too."""
    from cnnkit.cli import main
    from cnnkit.data.saved_split import load_split
    from test_data_folders import write_classes

    photos = tmp_path / "photos"
    write_classes(photos, {"cat": 20, "dog": 20}, size=20)  # real PNG files in class sub-folders
    run = tmp_path / "run"
    args = ["train", "--data", str(photos), "--epochs", "1", "--image-size", "20", "--no-report", "--out", str(run)]
    assert main([*args, "-q"]) == 0, capsys.readouterr().err
    n_test = len(load_split(run).record["test"])
    capsys.readouterr()

    assert main(["export", str(run), "--quantize", "int8"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"parity on {n_test} images of the run's test split of {photos}" in out
    assert "synthetic" not in out and "no labels" not in out
    assert f"int8 on {n_test} images of the run's test split of {photos}: accuracy " in out and "->" in out
    props = {p.key: p.value for p in onnx.load(run / "model.int8.onnx").metadata_props}
    n_train = len(load_split(run).record["train"])
    assert f"calibrated on {n_train} images of the run's train split of {photos}" in props["quantization_details"]

    # --data takes what train takes: the folder itself (the run's own folder: its recorded test split)
    assert main(["export", str(run), "--data", str(photos), "--out", str(tmp_path / "again.onnx")]) == 0
    assert f"images of the run's test split of {photos}" in capsys.readouterr().out
    # ... and a folder the run never saw: all its images, labelled by their class folders
    other = tmp_path / "other"
    write_classes(other, {"cat": 3, "dog": 3}, size=24, seed=7)
    assert (
        main(["export", str(run), "--data", str(other), "--quantize", "int8", "--out", str(tmp_path / "o.onnx")]) == 0
    )
    out = capsys.readouterr().out
    assert f"int8 on 6 images of {other} (all images): accuracy " in out
