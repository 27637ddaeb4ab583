"""A custom torch module leaves Python: registered by name (never code), rebuilt on load only with permission."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from torch import nn

from conftest import SRC

NETS = textwrap.dedent(
    """
    from torch import nn

    from cnnkit.models import register_module


    @register_module("tinynet")
    class TinyNet(nn.Module):
        def __init__(self, num_classes=3, width=4):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))
    """
)


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A package of the user's own, on sys.path (as an installed package or a project folder is)."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userpkg.nets", raising=False)
    return tmp_path


def _load_in_a_new_process(root, model_file, out, *, trust: bool) -> subprocess.CompletedProcess:
    """Load the file where userpkg is importable but not imported: only permission may import it."""
    code = textwrap.dedent(
        f"""
        import sys, numpy as np
        from cnnkit.models import load_model
        assert "userpkg.nets" not in sys.modules
        model = load_model({str(model_file)!r}{", trust_code=True" if trust else ""})
        np.save({str(out)!r}, model.predict(np.load({str(root / "x.npy")!r}), verbose=0))
        """
    )
    env = {"PYTHONPATH": f"{SRC}:{root}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_registered_module_trains_saves_and_loads_back_only_with_permission(user_package, tmp_path):
    import importlib

    from cnnkit import models

    nets = importlib.import_module("userpkg.nets")
    rng = np.random.default_rng(0)
    x = rng.random((24, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 3, 24)
    model = models.Model(nets.TinyNet(width=5), input_shape=(12, 12, 1), class_names=["a", "b", "c"])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "tiny.safetensors"
    model.save(path)
    expected = model.predict(x, verbose=0)
    np.save(tmp_path / "x.npy", x)

    # The file records the class by name, its module and its arguments: JSON, no code.
    from cnnkit.modelfile import read_model_file

    metadata, _ = read_model_file(path)
    assert metadata["architecture"] == {
        "class_name": "module",
        "config": {"name": "tinynet", "module": "userpkg.nets", "kwargs": {"num_classes": 3, "width": 5}},
    }
    # In this process the class is registered: it is rebuilt without importing anything.
    again = models.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, atol=1e-6)
    assert again.class_names == ["a", "b", "c"]

    # A new process, with permission: the module is imported and the predictions are the same.
    result = _load_in_a_new_process(user_package, path, tmp_path / "p.npy", trust=True)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-6)

    # Without permission: one line saying which module would be imported and how to allow it.
    result = _load_in_a_new_process(user_package, path, tmp_path / "q.npy", trust=False)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert "module 'userpkg.nets'" in line and "trust_code=True" in line and "CNNKIT_TRUST_CODE=1" in line
    assert not (tmp_path / "q.npy").exists()


def test_permission_by_environment_and_missing_module(user_package, tmp_path, monkeypatch):
    import importlib

    from cnnkit.errors import ModelFileError
    from cnnkit.modelfile import read_model_file, write_model_file
    from cnnkit.models import Model, _registry, load_model

    nets = importlib.import_module("userpkg.nets")
    model = Model(nets.TinyNet(), input_shape=(8, 8, 1))
    path = tmp_path / "m.safetensors"
    model.save(path)
    monkeypatch.delitem(_registry._MODULES, "tinynet")  # as in a process that never imported userpkg.nets
    monkeypatch.delitem(sys.modules, "userpkg.nets")
    with pytest.raises(ModelFileError, match="would have to import"):
        load_model(path)
    monkeypatch.setenv("CNNKIT_TRUST_CODE", "1")
    assert isinstance(load_model(path).net, nn.Module)
    metadata, tensors = read_model_file(path)
    metadata["architecture"]["config"]["module"] = "no_such_package.nets"
    monkeypatch.delitem(_registry._MODULES, "tinynet")
    write_model_file(tmp_path / "gone.safetensors", tensors, metadata)
    with pytest.raises(ModelFileError, match="needs module 'no_such_package.nets', which cannot be imported"):
        load_model(tmp_path / "gone.safetensors")


def test_an_unregistered_module_says_exactly_what_to_do(tmp_path):
    from cnnkit import models
    from cnnkit.errors import ConfigError

    class PlainNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(x.mean((2, 3)).repeat(1, 4))

    model = models.Model(PlainNet(), input_shape=(8, 8, 1))
    with pytest.raises(ConfigError) as error:
        model.save(tmp_path / "plain.safetensors")
    message = str(error.value)
    assert "\n" not in message and "PlainNet" in message
    assert "@cnnkit.models.register_module()" in message and "export_model(model, 'onnx'" in message
    assert not (tmp_path / "plain.safetensors").exists()
