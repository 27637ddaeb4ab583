"""How long a user waits for a command: wall time of whole `cnnkit` commands, two trees side by side.

    python benchmarks/command_wait.py --before ../before [--reps 5] [--full]

Each repetition runs every command once with the ``before`` tree's ``src`` and once with this
tree's, in fresh processes, the order alternating between repetitions (a machine that gets busier
hits both alike); each figure is the median wall time over the repetitions, with after/before.
The commands, on the built-in digits:

- ``cnnkit train --help`` and ``cnnkit tune --help`` (flags generated from the configs);
- ``cnnkit train --epochs 1 --no-report``: a run's fixed cost (start-up, data, one 0.2 s epoch, the test);
- ``cnnkit train --epochs 1``: the same with the run's report;
- ``cnnkit evaluate RUN``, ``explain RUN IMAGE``, ``report RUN`` and ``predict RUN IMAGE --backend
  torch`` on a run trained once before the measurements (``predict``'s default lane, ONNX Runtime
  without torch, is ``benchmarks/predict_folder.py``'s);
- ``cnnkit serve RUN`` until its ``/readyz`` answers (two workers, the CPU default; the run's ONNX
  export cached by the warm-up);
- with ``--full``, ``cnnkit train`` itself: the README's first command after its install.

Without ``--before`` only this tree is measured.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _common import SRC, machine
from PIL import Image

COMMANDS = {
    "train --help": ["train", "--help"],
    "tune --help": ["tune", "--help"],
    "train --epochs 1 --no-report": ["train", "--epochs", "1", "--no-report", "--out", "{out}"],
    "train --epochs 1": ["train", "--epochs", "1", "--out", "{out}"],
    "evaluate RUN": ["evaluate", "{run}"],
    "explain RUN IMAGE": ["explain", "{run}", "{image}", "--out", "{out}.png"],
    "report RUN": ["report", "{run}"],
    "predict RUN IMAGE --backend torch": ["predict", "{run}", "{image}", "--backend", "torch"],
}
SERVE = {"serve RUN (until /readyz answers)": ["serve", "{run}", "--port", "{port}"]}
FULL = {"train (30 epochs)": ["train", "--out", "{out}"]}


def wall_seconds(src: Path, args: list[str], scratch: Path) -> float:
    """One fresh ``python -m cnnkit ARGS`` with ``src`` first on the path; its wall time (for
    ``serve``, until its ``/readyz`` answers 200; it is then stopped)."""
    out = Path(tempfile.mkdtemp(dir=scratch)) / "run"
    port = _free_port()
    filled = [a.format(out=out, run=scratch / "evaluated", image=scratch / "digit.png", port=port) for a in args]
    env = {**os.environ, "PYTHONPATH": str(src), "CNNKIT_DATA": str(scratch / "data")}
    started = time.perf_counter()
    if args[0] == "serve":
        return _ready_seconds([sys.executable, "-m", "cnnkit", *filled], env, port, started)
    done = subprocess.run([sys.executable, "-m", "cnnkit", *filled], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cnnkit {' '.join(filled)} failed with {src}:\n{done.stderr[-2000:]}")
    return seconds


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ready_seconds(argv: list[str], env: dict[str, str], port: int, started: float) -> float:
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except OSError:  # not listening yet, or not ready
                time.sleep(0.02)
        raise SystemExit(f"cnnkit {' '.join(argv[3:])} stopped:\n{server.stderr.read()[-2000:]}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="another checkout of cnnkit (its src/ is used)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="also the README's `cnnkit train` (30 epochs)")
    args = parser.parse_args()
    trees = {"after": SRC} | ({"before": args.before.resolve() / "src"} if args.before else {})
    commands = COMMANDS | SERVE | (FULL if args.full else {})
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        # The run `evaluate RUN` reads, trained once by this tree (both trees read the same model file).
        subprocess.run([sys.executable, "-m", "cnnkit", "train", "--epochs", "1", "--no-report", "-q", "--out",
                        str(scratch / "evaluated")], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(SRC)})  # fmt: skip
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(scratch / "digit.png")
        for name in trees:  # warm the page cache and build the kernels once per tree, unmeasured
            wall_seconds(trees[name], COMMANDS["train --epochs 1 --no-report"], scratch)
            wall_seconds(trees[name], SERVE["serve RUN (until /readyz answers)"], scratch)  # caches the export
        for rep in range(args.reps):
            order = list(trees) if rep % 2 == 0 else list(trees)[::-1]
            for command, argv in commands.items():
                for name in order:
                    times.setdefault((command, name), []).append(wall_seconds(trees[name], argv, scratch))
    print(machine())
    print(f"wall time of whole commands on digits, fresh processes, median of {args.reps} alternating runs\n")
    columns = ["command", *(f"{name} s" for name in trees)] + (["after / before"] if len(trees) == 2 else [])
    print("| " + " | ".join(columns) + " |")
    print("| --- |" + " ---: |" * (len(columns) - 1))
    for command in commands:
        medians = {name: statistics.median(times[(command, name)]) for name in trees}
        row = [command, *(f"{medians[name]:.2f}" for name in trees)]
        if len(trees) == 2:
            row.append(f"{medians['after'] / medians['before']:.2f}x")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
