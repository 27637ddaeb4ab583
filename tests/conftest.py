"""Shared fixtures: a CLI runner that runs cnnkit as a user would, and a small trained model."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src"

# Two cores on CI: keep torch from oversubscribing when tests spawn subprocesses, or when pytest-xdist
# runs several test processes at once (each then takes its share of the cores).
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_TEST_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, _CORES // _TEST_PROCESSES)))

# Compiled kernels (cnnkit.kernels) go to a folder of this session's, not the user's cache; the
# CLI's subprocesses inherit it, so each shape is built once per session.
os.environ["CNNKIT_KERNEL_DIR"] = tempfile.mkdtemp(prefix="cnnkit-kernels-")
atexit.register(shutil.rmtree, os.environ["CNNKIT_KERNEL_DIR"], ignore_errors=True)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: a test process per core, at most 4 (each holds torch and its own trained models)."""
    return max(1, min(4, _CORES))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m cnnkit ARGS`` in a subprocess, with this checkout's sources first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.setdefault("COLUMNS", "200")
    return subprocess.run(
        [sys.executable, "-m", "cnnkit", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )  # fmt: skip


def run_main(*args: str) -> subprocess.CompletedProcess:
    """``cnnkit ARGS`` through ``cnnkit.cli.main`` in this process: the command's own code and error
    handling without starting Python and torch again (~2 s each). For the many refusal cases;
    ``run_cli`` runs the real command, as a user does, for everything else."""
    from cnnkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(["cnnkit", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def digits():
    from cnnkit import datasets

    return datasets.load_data("digits")


@pytest.fixture(scope="session")
def trained_seed(tmp_path_factory, digits):
    """The article's model trained briefly on digits and saved: (model, path)."""
    from cnnkit import models, seed_everything

    seed_everything(0)
    (x, y), _ = digits
    model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    model.class_names = [str(i) for i in range(10)]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("model") / "seed.safetensors"
    model.save(path)
    return model, path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
