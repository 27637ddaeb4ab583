"""Training under faults: killed, interrupted, a failing disk. The run resumes exactly; nothing is lost."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import SRC, run_cli

ARGS = ["--epochs", "4", "--batch-size", "128", "--deterministic", "--seed", "3", "--ema", "0.9", "-q", "--no-report"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _checkpoint_epoch(run: Path) -> int:
    import json

    try:
        with safe_open(run / "resume.safetensors", framework="pt") as f:
            return json.loads(f.metadata()["state"])["epoch"]
    except Exception:  # not written yet (or being replaced right now)
        return -1


# `cnnkit train` as a user runs it, except that once the first epoch's checkpoint is on disk the run
# says so (a file next to it) and waits there for the test's signal: a fast machine cannot finish
# the run before the signal comes, and a slow one is waited for, not raced.
_PAUSE_AFTER_FIRST_CHECKPOINT = """
import signal, sys, time
from pathlib import Path

# Ctrl-C as in a terminal: a process started in the background by a shell (a CI runner, a script
# ending in `&`) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt for it.
signal.signal(signal.SIGINT, signal.default_int_handler)
import cnnkit.recipe.run as run
from cnnkit.cli import main

real_save, ready = run.save_checkpoint, Path(sys.argv[1])

def save_then_wait(run_dir, state, epoch):
    real_save(run_dir, state, epoch)
    if epoch == 0:
        ready.write_text("epoch 0 saved")
        while True:  # until the test's signal
            time.sleep(0.01)

run.save_checkpoint = save_then_wait
sys.exit(main(sys.argv[2:]))
"""


def _interrupt_after_first_epoch(out: Path, sig: int) -> subprocess.CompletedProcess:
    ready = out.parent / f"{out.name}.first-checkpoint"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", _PAUSE_AFTER_FIRST_CHECKPOINT, str(ready), "train", *ARGS,
                             "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.time() + 300  # a bound on a broken run, not a timing claim
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None and ready.exists(), f"the run never reached its first checkpoint: {proc.communicate()}"
    assert _checkpoint_epoch(out) == 0
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)  # a bound on a broken run again
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "whole"
    result = run_cli("train", *ARGS, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "last.safetensors"):
        wa, wb = _weights(a / name), _weights(b / name)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{name}:{key} differs after resume"
    rows = [[{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader((run / "metrics.csv").open())]
            for run in (a, b)]  # fmt: skip
    assert rows[0] == rows[1] and len(rows[0]) == 4


def test_sigkill_then_resume_matches_an_uninterrupted_run(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    killed = _interrupt_after_first_epoch(out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists() or _checkpoint_epoch(out) < 3
    resumed = run_cli("train", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "test accuracy" in resumed.stdout
    _assert_same_run(uninterrupted, out)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written files


def test_ctrl_c_stops_cleanly_and_resumes(uninterrupted, tmp_path):
    out = tmp_path / "interrupted"
    stopped = _interrupt_after_first_epoch(out, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr and "cnnkit: interrupted" in stopped.stderr
    assert f"continue with: cnnkit train --resume {out}" in stopped.stdout
    resumed = run_cli("train", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(uninterrupted, out)


def test_resume_refuses_other_settings_and_non_runs(tmp_path):
    result = run_cli("train", "--resume", str(tmp_path), "--lr", "0.1")  # --epochs alone may extend a run
    assert result.returncode == 1 and "drop --lr" in result.stderr
    result = run_cli("train", "--resume", str(tmp_path))
    assert result.returncode == 1 and "not a run folder" in result.stderr and "Traceback" not in result.stderr


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from cnnkit.recipe import TrainConfig, train
    from cnnkit.train import checkpoint
    from cnnkit.train.checkpoint import read_checkpoint

    real_save = checkpoint.save_file
    calls = []

    def failing_second_save(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            Path(filename).write_bytes(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", failing_second_save)
    out = tmp_path / "run"
    config = TrainConfig(epochs=3, batch_size=256, out=str(out), verbose=0)
    with pytest.raises(OSError, match="No space left"):
        train(config)
    _, state = read_checkpoint(out)
    assert state["epoch"] == 0  # the first epoch's checkpoint, intact
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    result = train(resume=out)
    assert len(result.history["loss"]) == 3


def test_a_finished_run_is_extended_with_more_epochs(uninterrupted, tmp_path):
    """`cnnkit train --resume RUN --epochs 6` on a finished 4-epoch run: 2 more epochs, a new schedule segment."""
    import json
    import shutil

    run = tmp_path / "extended"
    shutil.copytree(uninterrupted, run)
    for flags, message in ((["--epochs", "3"], "give more than 4"), (["--epochs", "6", "--lr", "0.1"], "drop --lr")):
        refused = run_cli("train", "--resume", str(run), *flags)
        assert refused.returncode == 1 and message in refused.stderr and "Traceback" not in refused.stderr
    extended = run_cli("train", "--resume", str(tmp_path / "exten"), "--epochs", "6")  # a run named by a prefix
    assert extended.returncode == 0, extended.stderr
    assert "test accuracy" in extended.stdout
    before = list(csv.DictReader((uninterrupted / "metrics.csv").open()))
    after = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(after) == 6 and [row["epoch"] for row in after][:4] == [row["epoch"] for row in before]
    # The first run's schedule ended at zero; the extra epochs train under a new warm-up and decay.
    assert float(before[-1]["lr"]) < 1e-6 < float(after[4]["lr"])
    assert _checkpoint_epoch(run) == 5
    with safe_open(run / "model.safetensors", framework="pt") as f:
        summary = json.loads(f.metadata()["cnnkit"])["training"]
    assert summary["epochs"] == 6 and summary["config"]["epochs"] == 6
    again = run_cli("train", "--resume", str(run))  # nothing left to train: the extension was recorded
    assert again.returncode == 0, again.stderr
    assert len(list(csv.DictReader((run / "metrics.csv").open()))) == 6


def test_fit_called_again_continues_as_in_keras(digits):
    """A second ``fit`` continues from the weights and optimizer state; epochs are numbered as Keras numbers them."""
    from cnnkit import models, seed_everything

    seed_everything(0)
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    first = model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    optimizer, steps = model.optimizer, _adam_steps(model.optimizer)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    more = model.fit(x, y, epochs=5, batch_size=64, verbose=0, initial_epoch=2)  # Keras: epochs 3 to 5
    assert first.epoch == [0, 1] and more.epoch == [2, 3, 4] and len(more.history["loss"]) == 3
    assert model.optimizer is optimizer and _adam_steps(optimizer) == steps + 3 * 4  # the same optimizer, on
    assert any(not torch.equal(weights[k], v) for k, v in model.state_dict().items())
    again = model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # Keras: one more epoch, numbered 0
    assert again.epoch == [0] and model.history is again and _adam_steps(optimizer) == steps + 4 * 4


def _adam_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(max(float(state["step"]) for state in optimizer.state.values()))
