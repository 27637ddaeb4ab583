"""The README's table of Keras coverage is what the code says, and unknown Keras names are one clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cnnkit as keras
from cnnkit import keras_coverage
from cnnkit._keras_names import INSTEAD, KerasNameError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_table_is_the_generated_one():
    text = README.read_text()
    start, end = keras_coverage._START, keras_coverage._END
    shown = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.S)
    assert shown, "README.md lost its keras-coverage markers"
    assert shown.group(1) == keras_coverage.markdown(), "run: python -m cnnkit.keras_coverage --update README.md"


def test_covered_names_resolve_and_the_others_raise_one_line_with_advice():
    table = keras_coverage.coverage()
    assert "image_dataset_from_directory" in table["keras.utils"][0]
    assert "BackupAndRestore" in table["keras.callbacks"][0] and "mnist" in table["keras.datasets"][0]
    assert "ops" in table["keras"][2]  # cannot mean the same: the error says what to use
    for module, columns in table.items():
        for name in columns[2]:
            assert f"{module}.{name}" in INSTEAD or module == "keras" and name in ("ops", "applications")
    with pytest.raises(KerasNameError, match=r"^keras\.ops is not in cnnkit: cnnkit runs on PyTorch"):
        keras.ops  # noqa: B018
    with pytest.raises(AttributeError) as plain:
        keras.__getattr__("_private")
    assert not isinstance(plain.value, KerasNameError)  # Python's own probes see a plain AttributeError


def test_tensorflow_names_through_the_keras_import_say_what_to_use():
    with pytest.raises(KerasNameError, match="torch autograd"):
        keras.GradientTape  # noqa: B018  (`tf.GradientTape` written against `import cnnkit as tf`)
    with pytest.raises(KerasNameError, match=r"keras\.utils\.split_dataset is not in cnnkit: pass NumPy arrays"):
        keras.utils.split_dataset  # noqa: B018


def test_the_readme_keras_example_runs_as_written(tmp_path, monkeypatch):
    """Keras' "simple MNIST convnet" from the README, on MNIST files written here (epochs cut to 1)."""
    import cnnkit.data.downloads as downloads
    from official_formats import write_mnist

    monkeypatch.setattr(downloads, "_open", lambda url, timeout: pytest.fail(f"tried to download {url}"))
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_mnist(tmp_path, n_train=200, n_test=50)
    code = re.search(r"## Keras code.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(code.replace("epochs=15", "epochs=1"), scope)  # noqa: S102 (the README's own code)
    loss, accuracy = scope["score"]
    assert 0 <= accuracy <= 1 and loss > 0
    assert not (tmp_path / "backup").exists()  # BackupAndRestore's backup is gone once fit completes
