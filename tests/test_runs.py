"""What a model argument names (``runs.resolve_model``), the same for every command, and loading it once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cnnkit.errors import ConfigError, ModelFileError
from cnnkit.runs import MODEL_FILE, ModelSource, resolve_model, resolve_run
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
    if export.endswith(".torchscript.pt"):  # an ONNX file is what predict runs on ONNX Runtime
        assert "is a TorchScript export: cnnkit never loads TorchScript" in _error("predict", path, "x.png")
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
