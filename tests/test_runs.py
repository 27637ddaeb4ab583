"""What a model argument names (``runs.resolve_model``), the same for every command, and loading it once."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import ConfigError, ModelFileError
from cnnkit.runs import MODEL_FILE, ModelSource, find_runs, resolve_model, resolve_run
from conftest import run_main


def test_resolve_model_names_files_exports_and_runs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / MODEL_FILE).write_bytes(b"")
    assert resolve_model(run) == ModelSource("model", run / MODEL_FILE, run_dir=run)
    assert resolve_model(str(run / MODEL_FILE)) == ModelSource("model", run / MODEL_FILE)
    # Known by name before they exist: the reader of each kind says what is wrong with the file.
    assert resolve_model("exports/model.onnx") == ModelSource("onnx", Path("exports/model.onnx"))
    assert resolve_model("model.int8.onnx").kind == "onnx"
    assert resolve_model("model.torchscript.pt").kind == "torchscript"
    assert resolve_model("digits.pt2").kind == "pt2"  # cnnkit export --format pt2
    assert resolve_model("model.pt").kind == "model"  # modelfile explains that it is a pickle
    with pytest.raises(ModelFileError, match="without a model.safetensors: not a finished training run"):
        resolve_model(tmp_path)
    assert resolve_run(run) == run
    with pytest.raises(ConfigError, match="no such run folder"):
        resolve_run(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"is a model file, not a run folder"):
        resolve_run(run / MODEL_FILE)


def test_an_export_is_refused_where_the_model_itself_is_needed():
    source = resolve_model("m.torchscript.pt")
    with pytest.raises(ConfigError, match=r"^m\.torchscript\.pt is a TorchScript export: give the model$"):
        source.model_file("give the model")
    assert resolve_model("m.safetensors").model_file("unused") == Path("m.safetensors")


def _error(*args: str) -> str:
    result = run_main(*args)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("export", ["model.onnx", "model.torchscript.pt"])
def test_every_command_reads_a_model_argument_the_same_way(trained_seed, tmp_path, export):
    """An export given where a model file is needed: one line naming what it is, from every command."""
    from cnnkit.serve import create_app

    path = str(tmp_path / export)
    what = "an ONNX export" if export.endswith(".onnx") else "a TorchScript export"
    for command in (["explain", path, "x.png"], ["evaluate", path, "--data", "digits"], ["export", path],
                    ["serve", path, "--port", "0"]):  # fmt: skip
        assert f"{path} is {what}: " in _error(*command), command
    with pytest.raises(ConfigError, match=f"is {what}: serve the .safetensors model file"):
        create_app(path)
    if export.endswith(".torchscript.pt"):  # predict runs both exports (tests/test_predict.py); this one is missing
        assert f"{path}: no such TorchScript file" in _error("predict", path, "x.png")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_seed[1], run / MODEL_FILE)
    assert "is a model file, not a run folder" in _error("report", str(run / MODEL_FILE))


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_server_reads_the_model_file_once(trained_seed, tmp_path, monkeypatch, backend):
    """One read of the file and one rebuild, with or without a cached export; the predictor is built from it."""
    import cnnkit.models.loading as loading
    from cnnkit.serve.config import ServeConfig
    from cnnkit.serve.service import ModelService

    path = tmp_path / MODEL_FILE
    shutil.copy(trained_seed[1], path)
    calls = {"read": 0, "rebuild": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(loading, "read_model_file", counted("read", loading.read_model_file))
    monkeypatch.setattr(loading, "model_from_config", counted("rebuild", loading.model_from_config))
    for start in ("no cache yet", "cached export"):
        calls.update(read=0, rebuild=0)
        service = ModelService.load(tmp_path, ServeConfig(backend=backend))  # the run folder
        assert calls == {"read": 1, "rebuild": 1}, start
        assert service.predictor.backend == backend and service.model.name == "seed"


def _runs(trained_seed, runs_dir: Path, *names: str) -> list[Path]:
    """Finished runs named ``names``, created in that order (their config.json one minute apart)."""
    made = []
    for i, name in enumerate(names):
        run = runs_dir / name
        run.mkdir(parents=True)
        shutil.copy(trained_seed[1], run / MODEL_FILE)
        (run / "config.json").write_text(json.dumps({"model": "seed"}))
        os.utime(run / "config.json", (1_800_000_000 + 60 * i,) * 2)
        made.append(run)
    return made


def test_a_run_is_named_by_latest_its_folder_or_a_prefix_only_it_has(trained_seed, tmp_path):
    runs_dir = tmp_path / "runs"
    # Created in this order; the names sort otherwise, so `latest` must go by the recorded time.
    old, new, faces = _runs(trained_seed, runs_dir, "seed-digits-20261203-120000", "seed-digits-20261201-090000",
                            "seed-faces-20261202-100000")  # fmt: skip
    (runs_dir / "unfinished").mkdir()  # no model file: not a run anyone can name
    assert find_runs(runs_dir) == [old, new, faces]
    assert resolve_model("latest", runs_dir=runs_dir) == ModelSource("model", faces / MODEL_FILE, run_dir=faces)
    assert resolve_model("seed-faces", runs_dir=runs_dir).run_dir == faces
    assert resolve_model(str(runs_dir / "seed-faces")).run_dir == faces  # a prefix with its folder
    assert resolve_model("seed-digits-20261201", runs_dir=runs_dir).run_dir == new
    assert resolve_model(str(runs_dir / "seed-d*-20261203-*") + "/").run_dir == old  # a quoted pattern
    assert resolve_run("seed-faces", runs_dir=runs_dir) == faces
    message = f"seed-digits names 2 runs: {old}, {new}; name one (its folder, `latest` or a prefix only it has)"
    for name in ("seed-digits", str(runs_dir / "seed-digits-*")):
        with pytest.raises(ConfigError, match="names 2 runs") as caught:
            resolve_model(name, runs_dir=runs_dir)
        assert str(caught.value) == message.replace("seed-digits", name, 1)
    with pytest.raises(ModelFileError, match=r"^seed-cifar: no such model file or run folder, and no run under"):
        resolve_model("seed-cifar", runs_dir=runs_dir)
    with pytest.raises(ConfigError, match="no finished runs under"):
        resolve_model("latest", runs_dir=tmp_path / "elsewhere")
    # A missing file is still a file (its reader says it is missing), and `latest` a run only if no file has that name.
    assert resolve_model("seed.safetensors", runs_dir=runs_dir) == ModelSource("model", Path("seed.safetensors"))


def test_the_python_api_takes_what_the_cli_takes(trained_seed, tmp_path, monkeypatch, digits):
    from cnnkit import models
    from cnnkit.inference import load_predictor

    monkeypatch.chdir(tmp_path)  # runs/ is where `cnnkit train` puts runs: relative to the working folder
    (run,) = _runs(trained_seed, Path("runs"), "seed-digits-20261203-101500")
    x = digits[1][0][:4]
    expected = trained_seed[0].predict(x, verbose=0)
    for name in (run, str(run), "latest", "seed-digits", str(run / MODEL_FILE)):
        model = models.load_model(name)
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    assert load_predictor("latest", "torch").predict_proba(x).shape == (4, 10)
    assert load_predictor("seed-dig", "torch").class_names == [str(i) for i in range(10)]


def test_predict_refuses_a_shell_pattern_that_matched_several_runs(trained_seed, tmp_path, monkeypatch, digits):
    """`cnnkit predict runs/seed-digits-*/ photo.png` with three runs: the shell passes all three."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    runs = _runs(trained_seed, Path("runs"), "seed-digits-1", "seed-digits-2", "seed-digits-3")
    for run in runs:
        (run / "curves.png").write_bytes(b"a plot, not a digit")
    Image.fromarray((digits[1][0][0, :, :, 0] * 255).astype(np.uint8)).save("photo.png")
    listed = ", ".join(str(run) for run in runs)
    error = _error("predict", *(f"{run}/" for run in runs), "photo.png")
    assert f"the arguments name 3 runs ({listed})" in error, error
    assert "name one (its folder, `latest` or a prefix only it has)" in error
    assert "is a training run, not images" in _error("predict", "latest", str(runs[0]), "photo.png")
    assert "is a training run, not images" in _error("predict", "latest", "runs/*/", "photo.png")  # a quoted glob
    assert "names 3 runs" in _error("predict", "seed-digits", "photo.png")
    for name in ("latest", "seed-digits-2", f"{runs[1]}/"):  # each names one run: the photo is classified
        result = run_main("predict", name, "photo.png", "--format", "json", "--backend", "torch")
        assert result.returncode == 0, result.stderr
        assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == ["photo.png"]
