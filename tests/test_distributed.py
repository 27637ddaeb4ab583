"""Data-parallel training under torchrun, as a user runs it: real torchrun, gloo on CPUs, two processes.

Each run is small (faces, 144 training images, batches of 16, three epochs). One process trains a
reference; two processes must train the same weights and report the same metrics. The probes in
tests/torchrun_hooks (loaded only by torchrun's workers) record each process's weights after every
pass and every file it writes, and inject a failure (a SIGKILL, or an error) where a test asks.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import SRC, run_cli

HOOKS = Path(__file__).resolve().parent / "torchrun_hooks"
ARGS = ["--data", "faces", "--epochs", "3", "--batch-size", "16", "--deterministic", "--augment", "none",
        "--seed", "1", "-q"]  # fmt: skip
RUN_FILES = {"config.json", "split.json", "metrics.csv", "model.safetensors", "last.safetensors",
             "resume.safetensors", "curves.png", "train_batch.png", "report.html", "confusion.png", "reliability.png"}  # fmt: skip
REPORT_FILES = {"report.html", "confusion.png", "reliability.png"}  # not written with --no-report
OPTIONAL_FILES = {"mistakes.png"}  # the report's gallery of mistakes, when the model makes any


def torchrun(*args: str, log: Path, watch: Path | None = None, fail: str | None = None, restarts: int = 0,
             timeout: float = 180) -> subprocess.CompletedProcess:  # fmt: skip
    """``torchrun --standalone --nproc-per-node 2 -m cnnkit ARGS`` with the probes (see torchrun_hooks)."""
    log.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HOOKS), str(SRC)]), "CNNKIT_TEST_LOG": str(log),
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # fmt: skip
    for name, value in (("CNNKIT_TEST_WATCH", watch), ("CNNKIT_TEST_FAIL", fail)):
        env.pop(name, None)
        if value is not None:
            env[name] = str(value)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", str(restarts), "--monitor-interval", "0.2", "-m", "cnnkit", *args]  # fmt: skip
    # A session of its own: if the job ever outlives the timeout, its workers go with torchrun.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not end within {timeout}s:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _checkpoint_epoch(run: Path) -> int:
    with safe_open(run / "resume.safetensors", framework="pt") as f:
        return json.loads(f.metadata()["state"])["epoch"]


def _rows(run: Path) -> list[dict[str, float]]:
    return [
        {k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader((run / "metrics.csv").open())
    ]


def _assert_same_training(run: Path, reference: Path) -> None:
    """Equal weights within float32 rounding (the gradient sums are added up in another order) and metrics."""
    ours, theirs = _weights(run / "model.safetensors"), _weights(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        # Norm-wise, not element-wise: Adam divides each update by the root of its squared-gradient
        # average, so a weight whose gradient is near zero turns float32 reassociation into a difference
        # the size of an update (seen: 7e-5 in one first-layer weight, 1.2e-4 of the tensor's norm after
        # 27 steps). A real fault (a shard trained twice, gradients summed instead of averaged) is 1e-2 or more.
        error = torch.linalg.vector_norm(ours[key] - theirs[key]) / torch.linalg.vector_norm(theirs[key])
        assert error < 5e-4, f"{key}: relative difference {error:.1e}"
    rows, expected = _rows(run), _rows(reference)
    assert [r["epoch"] for r in rows] == [1.0, 2.0, 3.0]
    for row, want in zip(rows, expected):
        assert row.keys() == want.keys()
        for key in row:
            assert row[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (row["epoch"], key)


def _passes(log: Path) -> dict[tuple[int, int], dict[int, str]]:
    """``{(restart, pass): {rank: weights digest}}`` from the probes."""
    passes: dict[tuple[int, int], dict[int, str]] = {}
    for line in (log / "passes.txt").read_text().split("\n"):
        if line:
            restart, rank, number, digest = line.split()
            passes.setdefault((int(restart), int(number)), {})[int(rank)] = digest
    return passes


def _assert_replicas_in_step(log: Path) -> None:
    for (restart, number), digests in _passes(log).items():
        assert sorted(digests) == [0, 1], (restart, number)
        assert digests[0] == digests[1], f"the two processes' weights differ after pass {number} (restart {restart})"


def _writes(log: Path, rank: int) -> list[str]:
    return [line for f in sorted(log.glob(f"writes-rank{rank}-*.txt")) for line in f.read_text().splitlines()]


def _test_line(stdout: str) -> str:
    """``test accuracy 90.00%  loss 0.3256`` from what ``cnnkit train`` printed."""
    return re.search(r"test accuracy \S+  loss \S+", stdout).group(0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, str]:
    """One process's run (in this process, on one thread like each torchrun worker): its folder and test line."""
    from cnnkit.cli import build_parser
    from cnnkit.recipe import TrainConfig, train

    out = tmp_path_factory.mktemp("reference") / "run"
    flags = vars(build_parser().parse_args(["train", *ARGS]))
    options = {k: v for k, v in flags.items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(TrainConfig(**{**options, "out": str(out), "verbose": 0}))  # -q gives verbose=0 too
    finally:
        torch.set_num_threads(threads)
    return out, f"test accuracy {result.test.accuracy:.2%}  loss {result.test.loss:.4f}"


def test_two_processes_train_as_one_and_only_rank_0_writes(reference, tmp_path):
    out, log = tmp_path / "run", tmp_path / "log"
    result = torchrun("train", *ARGS, "--out", str(out), log=log, watch=out)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_training(out, reference[0])
    assert result.stdout.count("test accuracy") == 1  # rank 0 reports
    assert _test_line(result.stdout) == reference[1]
    _assert_replicas_in_step(log)
    # Rank 0 wrote the run folder, atomically; rank 1 wrote nothing at all in it.
    assert {p.name for p in out.iterdir()} - OPTIONAL_FILES == RUN_FILES
    assert any("config.json" in w for w in _writes(log, 0)) and any(".tmp" in w for w in _writes(log, 0))
    assert _writes(log, 1) == []


def test_a_killed_process_restarts_the_job_from_its_checkpoint_while_fine_tuning(reference, tmp_path):
    """Under --max-restarts 1, SIGKILL one process mid-run: torchrun restarts both, which continue from the
    checkpoint. Fine-tuning unfreezes the body after the first epoch: DDP must then synchronize it too."""
    out, log = tmp_path / "run", tmp_path / "log"
    args = ["train", "--data", "faces", "--weights", str(reference[0] / "model.safetensors"), "--freeze-epochs", "1",
            "--epochs", "2", "--batch-size", "16", "--augment", "none", "--seed", "1", "--out", str(out), "--no-report"]  # fmt: skip
    result = torchrun(*args, log=log, watch=out, fail="kill:1:1", restarts=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"continuing from the last checkpoint in {out}" in result.stdout
    passes = _passes(log)
    assert sorted(n for r, n in passes if r == 0) == [0, 1]  # the first start: killed after its second epoch
    assert sorted(n for r, n in passes if r == 1) == [0, 1]  # the restart: 2 of the 3 epochs, not all 3 again
    _assert_replicas_in_step(log)  # frozen, unfrozen (a new DDP wrapper), restarted: equal weights throughout
    assert [r["epoch"] for r in _rows(out)] == [1.0, 2.0, 3.0]
    assert {p.name for p in out.iterdir()} - OPTIONAL_FILES == RUN_FILES - REPORT_FILES
    assert _writes(log, 0) and _writes(log, 1) == []


def test_a_failing_process_ends_the_job_and_another_world_size_resumes_it(reference, tmp_path):
    """One process raises: every process stops with a one-line error and torchrun names the cause. The run
    then resumes in ONE process from the two processes' checkpoint, and ends as the reference did."""
    out, log = tmp_path / "run", tmp_path / "log"
    result = torchrun("train", *ARGS, "--no-report", "--out", str(out), "--dist-timeout", "60", log=log, fail="raise:1:1",
                      timeout=150)  # fmt: skip
    assert result.returncode != 0
    assert "cnnkit: error: [rank 1 of 2] injected failure after training pass 1" in result.stderr
    root_cause = result.stderr.split("Root Cause")[-1]
    assert "rank      : 1" in root_cause and "injected failure after training pass 1" in root_cause
    assert _checkpoint_epoch(out) == 0  # rank 0 saved the first epoch; the second never finished
    resumed = run_cli("train", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_training(out, reference[0])
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_hung_process_ends_the_job_after_the_timeout(tmp_path):
    """One process stops answering: the others give up after --dist-timeout, and torchrun stops it too."""
    out, log = tmp_path / "run", tmp_path / "log"
    result = torchrun("train", *ARGS, "--no-report", "--out", str(out), "--dist-timeout", "5s", log=log, fail="hang:1:0",
                      timeout=120)  # fmt: skip
    assert result.returncode != 0
    message = "[rank 0 of 2] lost contact with the other processes (Timed out"
    assert f"cnnkit: error: {message}" in result.stderr and message in result.stderr.split("Root Cause")[-1]
