"""``cnnkit predict``'s torch-free lane (ONNX Runtime on an export or a cached one, no GPU): it imports
neither torch nor onnx, and it answers exactly as the lane through :func:`cnnkit.inference.load_predictor`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit.export
import cnnkit.predict
from cnnkit.export.onnx_session import self_check_images
from cnnkit.inference import OnnxPredictor, load_predictor
from cnnkit.predict import open_predictor, predict_files
from conftest import SRC, run_cli, run_main


@pytest.fixture
def cached(trained_seed, tmp_path, digits):
    """A model file with its ONNX cache built, and a folder of digits with a bad file among them."""
    model = tmp_path / "model" / "model.safetensors"
    model.parent.mkdir()
    shutil.copy(trained_seed[1], model)
    load_predictor(model)  # auto on this CPU: exports, checks and caches model.cache.onnx
    folder = tmp_path / "images"
    folder.mkdir()
    _, (x_test, _) = digits
    for i in range(70):
        Image.fromarray((x_test[i, :, :, 0] * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "031b.png").write_text("not an image")
    return model, folder


def test_the_lean_lane_answers_as_load_predictor(cached):
    model, folder = cached
    lean = open_predictor(model)
    assert isinstance(lean, OnnxPredictor)
    for k, batch, workers in [(1, 16, 0), (3, 16, 2), (10, 256, 2)]:
        got = list(predict_files(lean, [folder], top_k=k, batch_size=batch, workers=workers))
        expected = list(predict_files(load_predictor(model), [folder], top_k=k, batch_size=batch, workers=workers))
        assert got == expected and sum(p.error is not None for p in got) == 1


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_the_cli_prints_the_same_bytes_in_both_lanes(cached, monkeypatch, fmt):
    model, folder = cached
    for k in ("1", "3"):
        args = ("predict", str(model), str(folder), "--format", fmt, "-k", k, "--batch-size", "16")
        lean = run_main(*args)
        with monkeypatch.context() as m:
            m.setattr(cnnkit.predict, "cpu_onnx_predictor", lambda *a, **kw: None)  # the lane through load_predictor
            existing = run_main(*args)
        assert (lean.returncode, lean.stdout, lean.stderr) == (existing.returncode, existing.stdout, existing.stderr)
        assert "031b.png" in lean.stderr
        if fmt == "csv":  # and as a user runs it, in its own process
            assert run_cli(*args).stdout == lean.stdout.replace("\r\n", "\n")  # text mode reads csv's \r\n as \n


_WRAPPER = """
import runpy, sys
sys.argv = ["cnnkit", *sys.argv[1:]]
try:
    runpy.run_module("cnnkit", run_name="__main__")
except SystemExit:
    pass
print("imported:", sorted(m for m in ("torch", "onnx") if m in sys.modules), file=sys.stderr)
"""


def test_predict_of_a_cached_model_imports_neither_torch_nor_onnx(cached):
    model, folder = cached
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for target in (model, model.with_name("model.cache.onnx")):  # a cached model file; an export as it is
        done = subprocess.run([sys.executable, "-c", _WRAPPER, "predict", str(target), str(folder), "--format", "csv"],
                              capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().splitlines()[-1] == "imported: []"
        assert done.stdout.count("\n") == 1 + 3 * 70


def test_self_check_images_are_torchs_seeded_rand():
    for shape in [(1, 28, 28), (3, 32, 32), (3, 5, 7)]:
        expected = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)).numpy()
        np.testing.assert_array_equal(self_check_images(*shape), expected)


def test_the_export_package_names_all_resolve():
    assert sorted(cnnkit.export.__all__) == sorted(cnnkit.export._MODULES)
    for name in cnnkit.export.__all__:
        assert getattr(cnnkit.export, name) is not None


_STOP_EARLY = r"""
import signal, sys
from cnnkit.inference import load_predictor
from cnnkit.predict import predict_files
signal.signal(signal.SIGTERM, lambda signum, frame: None)  # what `cnnkit serve` leaves while it drains
answers = predict_files(load_predictor(sys.argv[1]), [sys.argv[2]], batch_size=16, workers=2)
next(answers)
answers.close()  # the pool is terminated with chunks still in its workers
print("stopped")
"""


def test_stopping_early_ends_the_decoding_workers_whatever_sigterm_handler_the_process_has(cached):
    """The fork pool's workers inherit the parent's Python signal handlers; one that ignores SIGTERM
    left Pool.terminate waiting for them forever (a whole test run hung on it)."""
    model, folder = cached
    result = subprocess.run([sys.executable, "-c", _STOP_EARLY, str(model), str(folder)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "stopped", result.stderr
